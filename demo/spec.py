"""Architecture and conventions of the embedded demo model, shared by training and the nodes.

The demo model is a small latent diffusion model built from ComfyUI's own classes so that the
pack's methods apply to it exactly as to SDXL:

* VAE: ComfyUI's ``AutoencoderKL`` (8× down, 4 latent channels), trained on the procedural
  images of :mod:`demo.data`, its latent rescaled so that SDXL's latent format (scale 0.13025)
  gives unit variance.
* UNet: ComfyUI's ``UNetModel`` in SDXL's layout (three levels, two res blocks each, no attention
  at full resolution, self- and cross-attention transformer blocks at the two lower levels, ADM
  size conditioning), used through ComfyUI's ``SDXL`` model config (ε-prediction, the scaled-linear
  1000-step schedule).
* "Text": one learned embedding of ``CONTEXT_TOKENS`` tokens per class, plus one for the empty
  prompt (trained by dropping the class 10 % of the time, so classifier-free guidance works).
"""
from __future__ import annotations

NATIVE_PX = 128            # the training image side, in pixels (16² latent)
LATENT_SCALE = 0.13025     # SDXL's latent format scale factor
CONTEXT_DIM = 64
CONTEXT_TOKENS = 4
CLASSES = ("red disc", "blue square", "green triangle", "yellow diamond")
WEIGHTS_FILE = "ultrares_demo.safetensors"

VAE_DDCONFIG = {
    "double_z": True, "z_channels": 4, "resolution": NATIVE_PX, "in_channels": 3, "out_ch": 3,
    "ch": 32, "ch_mult": [1, 1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0,
}
VAE_EMBED_DIM = 4

UNET_CONFIG = {
    "use_checkpoint": False, "image_size": NATIVE_PX // 8, "in_channels": 4, "out_channels": 4,
    "model_channels": 32, "num_res_blocks": [2, 2, 2], "channel_mult": [1, 2, 2],
    "use_spatial_transformer": True, "legacy": False, "use_linear_in_transformer": True,
    "num_classes": "sequential", "adm_in_channels": CONTEXT_DIM + 6 * 256,
    "context_dim": CONTEXT_DIM, "num_head_channels": 16,
    "transformer_depth": [0, 0, 1, 1, 1, 1], "transformer_depth_middle": 1,
    "transformer_depth_output": [0, 0, 0, 1, 1, 1, 1, 1, 1],
}

# The size conditioning every training sample had (SDXL micro-conditioning, in pixels).
SIZE_CONDITIONING = {"width": NATIVE_PX, "height": NATIVE_PX, "crop_w": 0, "crop_h": 0,
                     "target_width": NATIVE_PX, "target_height": NATIVE_PX}
