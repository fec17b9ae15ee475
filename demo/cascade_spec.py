"""Architecture of the embedded Stable Cascade demo: a tiny stage C, its decoder and UltraPixel modules.

Trained by :mod:`demo.train_cascade`, loaded by UltraRes Demo Cascade (``nodes/demo_model.py``).

A small stage C built from ComfyUI's own ``StageC`` class in the 3.6B model's layout (two levels
at one spatial size, ``switch_level=[False]``, every level ``CTA``, so the AttnBlocks UltraPixel
hooks are ``down_blocks.{0,1}.2`` / ``up_blocks.{0,1}.2`` as in the real model), used through
ComfyUI's ``Stable_Cascade_C`` model config (ε-prediction on Stable Cascade's cosine schedule,
here at shift 1).

* Native size: a 12² stage-C latent, which Stable Cascade's empty-latent rule (``px // 42``) gives
  for 512 px; UltraPixel's LR pass therefore runs at ``lr_size`` 512 (1024 for the real model).
* Decoder: in place of stages B and A (far too large to train on a CPU), a ComfyUI
  ``AutoencoderKL`` with 16 latent channels and 8 px per latent cell, trained on the same
  pictures; the stock VAE Decode node draws a 12² latent as a 96 px picture, 48² as 384 px.
* Latent spread: ``DATA_STD`` (see there for why it is not 1).
* "Text": one learned embedding of ``CONTEXT_TOKENS`` tokens for its one class (``CLASSES``) plus
  one for the empty prompt; the pooled embedding is their mean.
* UltraPixel modules: the release's module, sized for this stage C (64 / 96 channels at the four
  points, 32-wide tokens), stored with the release's key layout.
"""
from __future__ import annotations

# One object class (the first of demo.data's): what a 1.2 M-parameter stage C learns in half an hour
# on a CPU; the demo is about repetition, not vocabulary.
CLASSES = ("red disc",)

NATIVE_LATENT = 12          # stage-C latent side the model is trained at
PX_PER_CELL = 8             # the demo decoder's pixels per stage-C latent cell
NATIVE_PX = NATIVE_LATENT * PX_PER_CELL   # 96 px pictures
NOMINAL_NATIVE_PX = 512     # the Stable Cascade size of a 12² stage-C latent (the nodes' width/height)
TEXTURE_SCALE = NATIVE_PX / 128   # texture periods of demo.data at this native size, kept at every size
LATENT_SCALE = 1.0          # Stable Cascade stage C's latent format (SC_Prior) scale factor
# Spread of the demo's stage-C latents (per-channel std). Stable Cascade's schedule starts at
# sigma 100 (alpha_cumprod clamped at 1e-4), where x0 = x - 100 eps: a tiny model's eps error of a
# few per cent there leaves several units of noise that no later step removes (its LayerNorm'd input
# barely sees the excess), so unit-spread latents sample at 4-15x their spread. At spread 10 the
# same error is a tenth of the data: the schedule then starts at 10x the data, like shift 0.1.
DATA_STD = 10.0
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
    "stable_cascade_stage": "c", "c_in": 16, "c_out": 16, "c_cond": 64, "c_hidden": [64, 96], "nhead": [2, 2],
    "blocks": [[2, 2], [2, 2]], "block_repeat": [[1, 1], [1, 1]], "level_config": ["CTA", "CTA"],
    "c_clip_text": CONTEXT_DIM, "c_clip_text_pooled": CONTEXT_DIM, "c_clip_img": 768,
}

# UltraPixelConfig arguments per injection point (ind = the stage-C channels there).
ULTRAPIXEL_MODULE = {"ch": 32, "n_head": 1, "n_groups": 8, "f_dim": 32, "n_freq": 16}
POINT_CHANNELS = {"E0": 64, "E1": 96, "D0": 96, "D1": 64}
