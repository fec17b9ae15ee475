"""Where a Pixelsmith patch believes it is: the rotary positions of a DiT's image tokens per patch.

A UNet has no positions (its convolutions do not know where a window lies; SDXL's crop
conditioning tells it, see ``nodes/pixelsmith_conditioning.py``). A DiT with rotary position
embeddings (RoPE) gives each image token a position id, counted from 0 at the top-left of what it
is handed. Pixelsmith hands it one patch at a time, so by default every patch believes it is a
whole native image (``local``): the positions the model was trained on. ``global`` gives each
patch's tokens their place in the full image instead, through ComfyUI's public
``transformer_options["rope_options"]`` (read by its Flux-family models, Flux.1 and Flux.2, and
Lumina2 / Z-Image): the patch at latent offset ``(top, left)`` is shifted by
``(top, left) / patch_size`` token rows and columns, times the RoPE scale already set on the model
(a user's ``ScaleROPE``-style setting is kept and composed, never replaced).

``global`` means one model call per patch (``rope_options`` holds one shift per call).
"""
from __future__ import annotations

import comfy.model_base

from ..kernels.tiling import PatchBox
from ._stage import dit_patch_side

POSITIONS = ("local", "global")
# Diffusion-model modules whose image-token positions follow transformer_options["rope_options"].
ROPE_MODEL_MODULES = {"comfy.ldm.flux.model": "Flux / Flux.2", "comfy.ldm.lumina.model": "Lumina2 / Z-Image"}


def token_side(inner_model: comfy.model_base.BaseModel, positions: str) -> int | None:
    """Latent cells per DiT token side when ``positions`` is ``global`` (else None); refuses
    ``global`` on a model whose positions ComfyUI cannot shift, naming it."""
    if positions == "local":
        return None
    net = inner_model.diffusion_model
    if type(net).__module__ not in ROPE_MODEL_MODULES:
        raise ValueError(
            f"positions: 'global' shifts the rotary positions of a DiT's image tokens, which ComfyUI supports on "
            f"{', '.join(ROPE_MODEL_MODULES.values())}; this model ({type(net).__name__}) has no such "
            "positions. Use 'local'.")
    return dit_patch_side(net)


def with_patch_position(model_options: dict, box: PatchBox, token: int) -> dict:
    """A copy of ``model_options`` whose RoPE shift puts ``box``'s tokens at their place in the full
    latent (``token``: latent cells per token side). The caller's dicts are never modified."""
    transformer_options = dict(model_options.get("transformer_options", {}))
    rope = dict(transformer_options.get("rope_options") or {})
    rope["shift_y"] = rope.get("shift_y", 0.0) + box.top / token * rope.get("scale_y", 1.0)
    rope["shift_x"] = rope.get("shift_x", 0.0) + box.left / token * rope.get("scale_x", 1.0)
    transformer_options["rope_options"] = rope
    return {**model_options, "transformer_options": transformer_options}
