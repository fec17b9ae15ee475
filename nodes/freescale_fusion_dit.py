"""FreeScale Scale Fusion on a DiT's joint attention, through ComfyUI's public attention override.

A UNet's self-attention is a module the Scale Fusion node can object-patch (``nodes/freescale_fusion.py``).
A DiT's joint attention (Flux.1 / Flux.2 double and single blocks, Qwen-Image blocks, Z-Image / Lumina 2
layers, SD3 / SD3.5 joint blocks) is a function call inside each block, on ``q, k, v`` of the text and
image tokens (after the rotary embedding where the model has one). ComfyUI routes every such call through
``transformer_options["optimized_attention_override"]`` (``comfy/ldm/modules/attention.py`` ``wrap_attn``),
so the patch is:

* an ``APPLY_MODEL`` wrapper (``ModelPatcher.add_wrapper_with_key``; every model class runs it, SD3's
  MMDiT included, which has no ``DIFFUSION_MODEL`` wrapper) that, per model call, reads the latent's size
  (the image-token grid and the target in image px) and the σ, and hands the call a copy of
  ``transformer_options`` carrying
* an attention override that runs ``kernels.freescale.joint_scale_fusion`` on every attention whose
  sequence is the prompt followed by exactly the image grid (joint attention), or the image grid alone
  (Z-Image's noise refiner, SD3.5 Medium's second image attention), with ComfyUI's own attention function
  (and any override another node had set before, which is called in its place).

Token layouts (read from ComfyUI 0.3.75's ``comfy/ldm``): text first, then the image tokens row-major;
Z-Image pads both the prompt and the picture to a multiple of ``pad_tokens_multiple`` tokens with
learned pad tokens at the end of each, which every window keeps, like the prompt. Calls that look like
neither layout (masked attention, text-only attention) pass through unchanged; a call with more tokens
than the prompt and the picture (reference latents) is refused.
"""
from __future__ import annotations

import dataclasses
import zlib
from typing import Any

import torch

from ..kernels import freescale
from ._stage import dit_patch_side

# Diffusion-model modules whose attention calls are routed through wrap_attn with the block's
# transformer_options, in one of the layouts above.
JOINT_ATTENTION_MODULES = {"comfy.ldm.flux.model": "Flux / Flux.2", "comfy.ldm.qwen_image.model": "Qwen-Image",
                           "comfy.ldm.lumina.model": "Z-Image / Lumina 2",
                           "comfy.ldm.modules.diffusionmodules.mmdit": "SD3 / SD3.5"}


def supports(diffusion_model: torch.nn.Module) -> bool:
    return type(diffusion_model).__module__ in JOINT_ATTENTION_MODULES


def supported_names() -> str:
    return ", ".join(JOINT_ATTENTION_MODULES.values())


def _round_up(n: int, multiple: int) -> int:
    return n + (-n) % multiple


def position_table_px(diffusion_model: torch.nn.Module, latent_px: int) -> int | None:
    """Image px a side that a learned position table covers (SD3 / SD3.5: 192 tokens, 3072 px), or None."""
    if getattr(diffusion_model, "pos_embed", None) is None:
        return None
    return int(diffusion_model.pos_embed_max_size) * dit_patch_side(diffusion_model) * int(latent_px)


def check_position_table(limit_px: int | None, size_px: tuple[int, int], name: str = "FreeScale") -> None:
    """Refuse a picture of ``size_px`` (H, W) larger than the position table, before ComfyUI's assert does."""
    if limit_px is not None and max(size_px) > limit_px:
        raise ValueError(
            f"{name} on SD3 / SD3.5: the model's learned position table covers {limit_px} px a side, and "
            f"{size_px[1]} x {size_px[0]} px is larger. Keep FreeScale's sizes at or below {limit_px} px on this "
            "model, or use Pixelsmith, which calls the model on native-size patches.")


@dataclasses.dataclass(frozen=True)
class JointFusion:
    """The ``APPLY_MODEL`` wrapper (one per patched model; holds only its configuration)."""

    sigma_start: float
    sigma_end: float
    fast_mode: bool
    seed: int
    jitter: bool
    base_px: int
    latent_px: int      # image px per latent cell
    token_side: int     # latent cells per token side (the DiT's patch size)
    pad_multiple: int = 1           # Z-Image: prompt and picture each padded to a multiple of this many tokens
    table_px: int | None = None     # SD3: image px a side its learned position table covers

    @classmethod
    def for_model(cls, diffusion_model: torch.nn.Module, latent_px: int, **config: Any) -> JointFusion:
        return cls(**config, latent_px=latent_px, token_side=dit_patch_side(diffusion_model),
                   pad_multiple=int(getattr(diffusion_model, "pad_tokens_multiple", None) or 1),
                   table_px=position_table_px(diffusion_model, latent_px))

    def __call__(self, executor: Any, x: torch.Tensor, t: torch.Tensor, c_concat: Any = None, c_crossattn: Any = None,
                 control: Any = None, transformer_options: dict | None = None, **kwargs: Any) -> torch.Tensor:
        options = transformer_options if transformer_options is not None else {}
        check_position_table(self.table_px, tuple(int(n) * self.latent_px for n in x.shape[-2:]),
                             "FreeScale Scale Fusion")
        sigmas = options.get("sigmas")
        if sigmas is not None and self.sigma_end <= float(sigmas.max()) <= self.sigma_start:
            text_tokens = 0 if c_crossattn is None else int(c_crossattn.shape[1])
            override = self.override(x.shape[-2:], text_tokens, float(sigmas.max()),
                                     options.get("optimized_attention_override"))
            options = {**options, "optimized_attention_override": override}
        return executor(x, t, c_concat, c_crossattn, control, options, **kwargs)

    def override(self, latent_hw: torch.Size, text_tokens: int, sigma: float, previous: Any) -> Any:
        """The attention override for one model call on a latent of ``latent_hw`` cells with a prompt of
        ``text_tokens`` tokens, at σ."""
        p, m = self.token_side, self.pad_multiple
        h, w = -(-int(latent_hw[0]) // p), -(-int(latent_hw[1]) // p)  # the DiT pads to whole tokens
        image = _round_up(h * w, m)        # the picture's tokens with its pad tail
        joint = _round_up(text_tokens, m) + image
        target = (int(latent_hw[0]) * self.latent_px, int(latent_hw[1]) * self.latent_px)

        def fused(func: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, *rest: Any,
                  **kw: Any) -> torch.Tensor:
            def attend(q_: torch.Tensor, k_: torch.Tensor, v_: torch.Tensor) -> torch.Tensor:
                args = (q_, k_, v_, heads, *rest)
                options = {**kw, "skip_reshape": True}
                return previous(func, *args, **options) if previous is not None else func(*args, **options)

            mask = rest[0] if rest else kw.get("mask")
            packed = not kw.get("skip_reshape")   # SD3: (B, N, heads·d) rather than (B, heads, N, d)
            n = q.shape[1] if packed else q.shape[2]
            if mask is not None or kw.get("skip_output_reshape") or n not in (image, joint):
                if n > joint and mask is None:
                    raise ValueError(
                        f"FreeScale Scale Fusion: this model call attends over {n} tokens, more than the prompt "
                        f"({text_tokens}) and the {w}x{h} image tokens: reference latents (ReferenceLatent, Flux "
                        "Kontext, Flux.2 or Qwen-Image edit) add their own. Scale Fusion cannot tell them from the "
                        "picture; use plain text conditioning on the model it patches.")
                return previous(func, q, k, v, heads, *rest, **kw) if previous is not None else \
                    func(q, k, v, heads, *rest, **kw)
            if packed:  # SD3 hands v over as (B, N, heads, d), q and k flattened; ComfyUI views all three alike
                q, k, v = (t.reshape(t.shape[0], n, heads, -1).transpose(1, 2) for t in (q, k, v))
            prefix, tail = n - image, image - h * w
            if tail:  # the picture's pad tokens join the prompt's (exact: attention is order-free once q, k carry
                # their positions), so the grid is the last h·w tokens
                q, k, v = (torch.cat([t[:, :, :prefix], t[:, :, n - tail:], t[:, :, prefix:n - tail]], dim=2)
                           for t in (q, k, v))
            block = kw.get("transformer_options", {})
            key = f"{self.seed}/{block.get('block_type')}/{block.get('block_index')}/{sigma!r}"
            generator = torch.Generator().manual_seed(zlib.crc32(key.encode()))
            out = freescale.joint_scale_fusion(q, k, v, attend, prefix + tail, h, w, target,
                                               fast_mode=self.fast_mode, generator=generator, jitter=self.jitter,
                                               base_px=self.base_px)
            if tail:
                out = torch.cat([out[:, :prefix], out[:, prefix + tail:], out[:, prefix:prefix + tail]], dim=1)
            return out

        return fused
