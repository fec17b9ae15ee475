"""FreeScale Scale Fusion as a model patch: every self-attention becomes global + local fused.

FreeScale (Qiu et al., 2024), Scale Fusion (paper Fig. 2(b)); official code ali-vilab/FreeScale@d5a2256
``scale_attention.py:83-286``. Each ``attn1`` of the UNet's transformer blocks is
object-patched on a clone of the model with :class:`ScaleFusionAttention`, which runs the
original module (ComfyUI's optimized attention, never an explicit N×N matrix) on overlapping
windows and on the whole map, then fuses them after the output projection, as the 3-D blur
requires. The math lives in ``kernels/freescale.py``. On a DiT (Flux.1, Flux.2, Qwen-Image, Z-Image, SD3) the joint
attention is patched through ComfyUI's attention override instead: ``nodes/freescale_fusion_dit.py``.
"""
from __future__ import annotations

import dataclasses
import struct
import zlib
from typing import TYPE_CHECKING

import comfy.patcher_extension
import torch
from comfy_api.latest import io

from ..kernels import freescale
from . import freescale_fusion_dit
from ._checks import check_numbers
from ._schema import advanced
from ._stage import model_latent_px

if TYPE_CHECKING:
    from comfy.model_patcher import ModelPatcher


@dataclasses.dataclass(frozen=True)
class ScaleFusionConfig:
    sigma_start: float      # patch active while sigma_end <= σ <= sigma_start
    sigma_end: float
    fast_mode: bool
    seed: int
    jitter: bool
    max_views_per_call: int | None
    base_px: int = freescale.BASE_PX  # native size of the model (window = base_px image px)
    latent_px: int = 8                # image px per latent cell (the VAE's downscale)


class ScaleFusionAttention(torch.nn.Module):
    """Wraps one ``attn1`` module; falls back to it unchanged outside the active σ range.

    The wrapper registers the wrapped module's children (``to_q``/``to_k``/``to_v``/``to_out``)
    as its own, so every parameter keeps its name (``...attn1.to_q.weight``): LoRA and other
    weight patches still find their keys, and ComfyUI can call ``attn1.to_q`` directly when
    another node installs an ``attn1`` replace patch. The wrapped module itself is kept as a
    plain attribute, not a submodule, for the same reason.
    """

    def __init__(self, inner: torch.nn.Module, config: ScaleFusionConfig, block_key: int):
        super().__init__()
        for name, child in inner.named_children():
            self.add_module(name, child)
        object.__setattr__(self, "inner", inner)
        self.config = config
        self.block_key = block_key

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if "inner" not in self.__dict__:
                raise
            return getattr(self.__dict__["inner"], name)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, value: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, transformer_options: dict | None = None) -> torch.Tensor:
        transformer_options = {} if transformer_options is None else transformer_options
        config = self.config
        shape = transformer_options.get("activations_shape")
        original = transformer_options.get("original_shape")
        sigmas = transformer_options.get("sigmas")
        self_attention = context is None and value is None and mask is None
        if not (self_attention and shape and original and sigmas is not None):
            return self.inner(x, context=context, value=value, mask=mask, transformer_options=transformer_options)
        sigma = float(sigmas.max())
        h, w = int(shape[-2]), int(shape[-1])
        if not (config.sigma_end <= sigma <= config.sigma_start) or h * w != x.shape[1]:
            return self.inner(x, transformer_options=transformer_options)

        def attn(tokens: torch.Tensor) -> torch.Tensor:
            return self.inner(tokens, transformer_options=transformer_options)

        target_hw = (int(original[-2]) * config.latent_px, int(original[-1]) * config.latent_px)
        # Jitter is seeded per (seed, block, σ): reproducible runs, different windows per step.
        step_seed = zlib.crc32(struct.pack("<qid", config.seed, self.block_key, sigma))
        generator = torch.Generator().manual_seed(step_seed)
        return freescale.scale_fusion(x, h, w, attn, target_hw, fast_mode=config.fast_mode,
                                      generator=generator, jitter=config.jitter, base_px=config.base_px,
                                      max_views_per_call=config.max_views_per_call)


def self_attention_modules(diffusion_model: torch.nn.Module) -> list[str]:
    """Names of every transformer-block self-attention (``...transformer_blocks.N.attn1``)."""
    return [name for name, module in diffusion_model.named_modules()
            if name.endswith(".attn1") and ".transformer_blocks." in name
            and hasattr(module, "to_q")]


class FreeScaleScaleFusion(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="UltraRes_FreeScaleScaleFusion",
            display_name="FreeScale Scale Fusion",
            category="UltraRes/FreeScale",
            description=(
                "Keeps the layout of the whole picture while adding local detail at large sizes, so objects "
                "do not repeat; start with the defaults (fast_mode off up to 4096²). FreeScale Scale Fusion "
                "(Qiu et al., 2024): replaces every UNet self-attention with "
                "local window attention (1024 px windows, 50% overlap) fused with global attention "
                "by a 3-D Gaussian frequency split: low frequencies from the windows, high "
                "frequencies from the global view. Use it on the upscaling stages of a cascade "
                "(2048² and above) to keep global structure without repetition. Models: SD1.x and "
                "SDXL-class UNets; Flux.1, Flux.2, Qwen-Image, Z-Image and SD3 DiTs (windows of image tokens that "
                "each keep the whole prompt, fused by a spatial blur; SD3 up to 3072 px a side). Cost: one extra attention pass over all windows per "
                "self-attention (about 2× attention time); fast mode swaps the global pass for "
                "dilated sub-grid attention, cheaper at 8192² and above."),
            inputs=[
                io.Model.Input("model", tooltip="The model to prepare for large sizes (SD1.x or SDXL-class UNet; Flux.1, "
                                                "Flux.2, Qwen-Image, Z-Image or SD3 DiT). A clone is patched; the input is unchanged."),
                io.Boolean.Input("fast_mode", default=False,
                                 tooltip="Turn on at 8192² and above: faster and lighter, slightly lower quality; "
                                         "leave off below. FreeScale fast mode: global part from dilated (strided "
                                         "sub-grid) attention instead of full attention."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Raise it to let the plain model shape the first steps; leave at 0. Sampling "
                                       "progress where the fusion starts (0 = first step).",
                               **advanced()),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Lower it to let the plain model finish the last steps; leave at 1. Sampling "
                                       "progress where the fusion stops (1 = last step). The paper fuses at every step.",
                               **advanced()),
                io.Int.Input("jitter_seed", default=0, min=0, max=0xFFFFFFFF, control_after_generate=False,
                             tooltip="Change it for a slightly different placement of the windows; keep it to "
                                     "reproduce a result. Seed of the window jitter (±1/8 window); the same seed "
                                     "reproduces the same windows.",
                             **advanced()),
                io.Boolean.Input("jitter", default=True,
                                 tooltip="On = hides the borders of the attention windows; leave on. Randomly shifts "
                                         "windows by up to 1/8 of their size each step, as FreeScale does.",
                                 **advanced()),
            ],
            outputs=[io.Model.Output(tooltip="The patched model; connect it to the sampler of the high-resolution pass. "
                                             "Scale Fusion on every transformer self-attention.")],
        )

    @classmethod
    def execute(cls, model: ModelPatcher, fast_mode: bool, start_percent: float, end_percent: float,
                jitter_seed: int, jitter: bool) -> io.NodeOutput:
        check_numbers(cls, locals())
        return io.NodeOutput(apply_scale_fusion(model, fast_mode=fast_mode, start_percent=start_percent,
                                                end_percent=end_percent, jitter_seed=jitter_seed, jitter=jitter))


def apply_scale_fusion(model: ModelPatcher, *, fast_mode: bool, start_percent: float = 0.0,
                       end_percent: float = 1.0, jitter_seed: int = 0, jitter: bool = True,
                       base_px: int = freescale.BASE_PX, latent_px: int | None = None) -> ModelPatcher:
    """A clone of ``model`` with Scale Fusion object-patched on every transformer ``attn1``.

    Shared by the Scale Fusion node and the all-in-one FreeScale Upscale node; ``latent_px``
    (image px per latent cell) defaults to the model's latent format.
    """
    if start_percent > end_percent:
        raise ValueError(f"start_percent ({start_percent}) must not exceed end_percent ({end_percent}).")
    diffusion_model = model.get_model_object("diffusion_model")
    names = self_attention_modules(diffusion_model)
    dit = not names and freescale_fusion_dit.supports(diffusion_model)
    if not names and not dit:
        raise ValueError(
            "model: FreeScale Scale Fusion needs a UNet with transformer self-attention (SD1.x/SDXL) or a DiT "
            f"with joint attention ({freescale_fusion_dit.supported_names()}); this "
            f"{type(model.model.model_config).__name__} model ({type(diffusion_model).__name__}) is neither.")
    sampling = model.get_model_object("model_sampling")
    config = ScaleFusionConfig(
        sigma_start=float(sampling.percent_to_sigma(start_percent)),
        sigma_end=float(sampling.percent_to_sigma(end_percent)),
        fast_mode=bool(fast_mode), seed=int(jitter_seed), jitter=bool(jitter), max_views_per_call=None,
        base_px=int(base_px), latent_px=int(latent_px or model_latent_px(model)))
    patched = model.clone()
    if dit:
        wrapper = freescale_fusion_dit.JointFusion.for_model(
            diffusion_model, sigma_start=config.sigma_start, sigma_end=config.sigma_end, fast_mode=config.fast_mode,
            seed=config.seed, jitter=config.jitter, base_px=config.base_px, latent_px=config.latent_px)
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "ultrares_scale_fusion", wrapper)
        return patched
    for index, name in enumerate(names):
        key = f"diffusion_model.{name}"
        patched.add_object_patch(key, ScaleFusionAttention(model.get_model_object(key), config, index))
    return patched


NODES = (FreeScaleScaleFusion,)
