"""FreeScale Scale Fusion on a DiT's joint attention, through ComfyUI's public attention override.

A UNet's self-attention is a module the Scale Fusion node can object-patch (``nodes/freescale_fusion.py``).
A DiT's joint attention (Flux.1 / Flux.2 double and single blocks, Qwen-Image blocks) is a function
call inside each block, on ``q, k, v`` of the text and image tokens after the rotary embedding.
ComfyUI routes every such call through ``transformer_options["optimized_attention_override"]``
(``comfy/ldm/modules/attention.py`` ``wrap_attn``), so the patch is:

* a ``DIFFUSION_MODEL`` wrapper (``ModelPatcher.add_wrapper_with_key``) that, per model call, reads
  the latent's size (the image-token grid and the target in image px) and the σ, and hands the call a
  copy of ``transformer_options`` carrying
* an attention override that runs ``kernels.freescale.joint_scale_fusion`` on every joint attention
  whose sequence is the text followed by exactly the image grid, with ComfyUI's own attention
  function (and any override another node had set before, which is called in its place).

Calls that do not look like that (masked attention, text-only attention) are passed through
unchanged; a call with more tokens than the prompt and the picture (reference latents) is refused.
"""
from __future__ import annotations

import dataclasses
import zlib
from typing import Any

import torch

from ..kernels import freescale

# Diffusion-model modules whose joint attention is text tokens first, then the image tokens row-major,
# each call routed through wrap_attn with the block's transformer_options.
JOINT_ATTENTION_MODULES = {"comfy.ldm.flux.model": "Flux / Flux.2", "comfy.ldm.qwen_image.model": "Qwen-Image"}


def supports(diffusion_model: torch.nn.Module) -> bool:
    return type(diffusion_model).__module__ in JOINT_ATTENTION_MODULES


def supported_names() -> str:
    return ", ".join(JOINT_ATTENTION_MODULES.values())


@dataclasses.dataclass(frozen=True)
class JointFusion:
    """The ``DIFFUSION_MODEL`` wrapper (one per patched model; holds only its configuration)."""

    sigma_start: float
    sigma_end: float
    fast_mode: bool
    seed: int
    jitter: bool
    base_px: int
    latent_px: int      # image px per latent cell
    token_side: int     # latent cells per token side (the DiT's patch size)

    def __call__(self, executor: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        in_kwargs = "transformer_options" in kwargs
        options = kwargs["transformer_options"] if in_kwargs else args[-1]
        sigmas = options.get("sigmas") if isinstance(options, dict) else None
        if sigmas is None or not self.sigma_end <= float(sigmas.max()) <= self.sigma_start:
            return executor(*args, **kwargs)
        x, context = args[0], args[2] if len(args) > 2 else kwargs["context"]
        override = self.override(x.shape[-2:], int(context.shape[1]), float(sigmas.max()),
                                 options.get("optimized_attention_override"))
        options = {**options, "optimized_attention_override": override}
        if in_kwargs:
            return executor(*args, **{**kwargs, "transformer_options": options})
        return executor(*args[:-1], options, **kwargs)

    def override(self, latent_hw: torch.Size, text_tokens: int, sigma: float, previous: Any) -> Any:
        """The attention override for one model call on a latent of ``latent_hw`` cells with a prompt of
        ``text_tokens`` tokens, at σ."""
        p = self.token_side
        h, w = -(-int(latent_hw[0]) // p), -(-int(latent_hw[1]) // p)  # the DiT pads to whole tokens
        target = (int(latent_hw[0]) * self.latent_px, int(latent_hw[1]) * self.latent_px)

        def fused(func: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, *rest: Any,
                  **kw: Any) -> torch.Tensor:
            def attend(q_: torch.Tensor, k_: torch.Tensor, v_: torch.Tensor) -> torch.Tensor:
                if previous is not None:
                    return previous(func, q_, k_, v_, heads, *rest, **kw)
                return func(q_, k_, v_, heads, *rest, **kw)

            mask = rest[0] if rest else kw.get("mask")
            joint = (kw.get("skip_reshape") and not kw.get("skip_output_reshape") and mask is None and q.dim() == 4
                     and q.shape[2] >= h * w and q.shape[1] == heads)
            if not joint:
                return attend(q, k, v)
            if q.shape[2] != text_tokens + h * w:
                raise ValueError(
                    f"FreeScale Scale Fusion: this model call attends over {q.shape[2]} tokens, more than the prompt "
                    f"({text_tokens}) and the {w}x{h} image tokens: reference latents (ReferenceLatent, Flux Kontext, "
                    "Flux.2 or Qwen-Image edit) add their own. Scale Fusion cannot tell them from the picture; use "
                    "plain text conditioning on the model it patches.")
            block = kw.get("transformer_options", {})
            key = f"{self.seed}/{block.get('block_type')}/{block.get('block_index')}/{sigma!r}"
            generator = torch.Generator().manual_seed(zlib.crc32(key.encode()))
            return freescale.joint_scale_fusion(q, k, v, attend, q.shape[2] - h * w, h, w, target,
                                                fast_mode=self.fast_mode, generator=generator, jitter=self.jitter,
                                                base_px=self.base_px)

        return fused

