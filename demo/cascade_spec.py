"""Architecture of a tiny Stable Cascade stage C and UltraPixel modules for a CPU demo (in progress).

Trained by :mod:`demo.train_cascade`; not shipped yet: the stage C this trains in 20 minutes on a CPU
draws blobby objects and samples latents of about twice the data's spread, too weak to show what
UltraPixel does, so the pack has no node for it so far.

A small stage C built from ComfyUI's own ``StageC`` class in the 3.6B model's layout (two levels
at one spatial size, ``switch_level=[False]``, every level ``CTA``, so the AttnBlocks UltraPixel
hooks are ``down_blocks.{0,1}.2`` / ``up_blocks.{0,1}.2`` as in the real model), used through
ComfyUI's ``Stable_Cascade_C`` model config (ε-prediction on Stable Cascade's cosine schedule).

* Native size: a 12² stage-C latent, which Stable Cascade's rule ``ceil(px / 42.67)`` assigns to
  512 px; UltraPixel's LR pass is therefore run at ``lr_size`` 512 (1024 for the real model).
* Decoder: in place of stages B and A (far too large to train on a CPU), a ComfyUI
  ``AutoencoderKL`` with 16 latent channels and 8 px per latent cell, trained on the same
  pictures; the stock VAE Decode node draws a 12² latent as a 96 px picture, 48² as 384 px.
* "Text": one learned embedding of ``CONTEXT_TOKENS`` tokens for its one class (``CLASSES``) plus
  one for the empty prompt; the pooled embedding is their mean.
* UltraPixel modules: the release's module, sized for this stage C (48 / 64 channels at the four
  points, 32-wide tokens), stored with the release's key layout.
"""
from __future__ import annotations

# One object class (the first of demo.data's): a 0.5 M-parameter stage C trained for 20 minutes on a
# CPU draws one class cleanly but mixes four up (blobs of the wrong colour, empty backgrounds).
CLASSES = ("red disc",)

NATIVE_LATENT = 12          # stage-C latent side the model is trained at
PX_PER_CELL = 8             # the demo decoder's pixels per stage-C latent cell
NATIVE_PX = NATIVE_LATENT * PX_PER_CELL   # 96 px pictures
NOMINAL_NATIVE_PX = 512     # the Stable Cascade size of a 12² stage-C latent (the nodes' width/height)
TEXTURE_SCALE = NATIVE_PX / 128   # texture periods of demo.data at this native size, kept at every size
LATENT_SCALE = 1.0          # Stable Cascade stage C's latent format (SC_Prior) scale factor
CONTEXT_DIM = 64
CONTEXT_TOKENS = 4
WEIGHTS_FILE = "ultrares_cascade_demo.safetensors"
ULTRAPIXEL_FILE = "ultrapixel_demo.safetensors"

VAE_DDCONFIG = {
    "double_z": True, "z_channels": 16, "resolution": NATIVE_PX, "in_channels": 3, "out_ch": 3,
    "ch": 32, "ch_mult": [1, 1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0,
}
VAE_EMBED_DIM = 16

STAGE_C_CONFIG = {
    "stable_cascade_stage": "c", "c_in": 16, "c_out": 16, "c_cond": 64, "c_hidden": [48, 64], "nhead": [1, 1],
    "blocks": [[1, 1], [1, 1]], "block_repeat": [[1, 1], [1, 1]], "level_config": ["CTA", "CTA"],
    "c_clip_text": CONTEXT_DIM, "c_clip_text_pooled": CONTEXT_DIM, "c_clip_img": 768,
}

# UltraPixelConfig arguments per injection point (ind = the stage-C channels there).
ULTRAPIXEL_MODULE = {"ch": 32, "n_head": 1, "n_groups": 8, "f_dim": 32, "n_freq": 16}
POINT_CHANNELS = {"E0": 48, "E1": 64, "D0": 64, "D1": 48}
