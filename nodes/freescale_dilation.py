"""FreeScale restrained dilated convolution as a model patch.

FreeScale (Qiu et al., 2024); official code ali-vilab/FreeScale@d5a2256 ``pipeline_freescale.py:901-945``.
The 3×3 convolutions of the deepest UNet level (the
downsample into it, its res blocks) and of the middle block run with dilation ``d`` and padding
``d``, ``d = target_width // base_size``, during the first ``dilate_percent`` of the steps; the
up-blocks are never dilated (the "restrained" part).

How it is applied: a keyed ``DIFFUSION_MODEL`` wrapper on a clone of the model. For each UNet call
it decides from σ and the sampling schedule whether the step is dilated and, if so, sets
``dilation``/``padding`` on those conv modules for the duration of that call only, restoring them
in a ``finally`` (so also on interrupt or error). Conv modules read ``self.dilation`` and
``self.padding`` at call time, for every ComfyUI cast-op class, so weights, LoRA patches and
low-VRAM casting are untouched. No object patch is used: wrapping the convs would rename their
weights (``...op.inner.weight``) and ComfyUI would then skip LoRA patches on them.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import comfy.patcher_extension
import torch
from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample, ResBlock
from comfy_api.latest import io

from ..kernels import freescale
from ._checks import check_numbers
from ._stage import model_latent_px

if TYPE_CHECKING:
    from comfy.model_patcher import ModelPatcher

WRAPPER_KEY = "ultrares_freescale_dilation"


@dataclasses.dataclass(frozen=True)
class DilationConfig:
    layers: tuple[str, ...]  # module names inside diffusion_model
    dilate_percent: float    # dilate_tau / steps (0.7 = 35 of 50)
    base_px: int             # d = target_width_px // base_px
    latent_px: int           # image px per latent cell (the VAE's downscale)


def _dilatable(layer: torch.nn.Module) -> bool:
    return (isinstance(layer, torch.nn.Conv2d) and layer.kernel_size == (3, 3)
            and layer.padding_mode == "zeros")


def restrained_dilation_layers(diffusion_model: torch.nn.Module) -> list[str]:
    """3×3 convs FreeScale dilates, derived from the UNet structure (the official list, generalised).

    The stride-2 conv of the last ``Downsample`` (into the deepest level), ``in_layers``/
    ``out_layers`` convs of every res block after it in ``input_blocks``, and those of the
    middle block's res blocks. For SDXL this is exactly the official list
    (``input_blocks.6.0.op``, the convs of ``input_blocks.7``/``8`` and of ``middle_block.0``/``2``,
    ali-vilab/FreeScale@d5a2256 ``pipeline_freescale.py:901-945``); for SD1.x it is input_blocks.9.0.op,
    10, 11 and the middle block.
    """
    input_blocks = getattr(diffusion_model, "input_blocks", None)
    middle_block = getattr(diffusion_model, "middle_block", None)
    if input_blocks is None or middle_block is None:
        return []
    downsamples = [(i, j) for i, block in enumerate(input_blocks) for j, m in enumerate(block)
                   if isinstance(m, Downsample) and _dilatable(m.op)]
    if not downsamples:
        return []
    last, pos = downsamples[-1]
    names = [f"input_blocks.{last}.{pos}.op"]

    def resblock_convs(prefix: str, blocks) -> list[str]:
        found = []
        for j, m in blocks:
            if isinstance(m, ResBlock):
                for seq_name in ("in_layers", "out_layers"):
                    for k, layer in enumerate(getattr(m, seq_name)):
                        if _dilatable(layer):
                            found.append(f"{prefix}.{j}.{seq_name}.{k}")
        return found

    for i in range(last + 1, len(input_blocks)):
        names += resblock_convs(f"input_blocks.{i}", enumerate(input_blocks[i]))
    names += resblock_convs("middle_block", enumerate(middle_block))
    return names


class RestrainedDilation:
    """Keyed ``DIFFUSION_MODEL`` wrapper: dilates the configured convs for one UNet call."""

    def __init__(self, config: DilationConfig, fallback_sigma: float):
        self.config = config
        self.fallback_sigma = fallback_sigma  # percent_to_sigma(dilate_percent), used without a schedule

    def factor(self, x: torch.Tensor, transformer_options: dict) -> int:
        sigmas = transformer_options.get("sigmas")
        if sigmas is None:
            return 1
        schedule = transformer_options.get("sample_sigmas")
        if schedule is not None:
            active = freescale.dilation_active(sigmas, schedule, self.config.dilate_percent)
        else:
            active = float(sigmas.max()) > self.fallback_sigma
        if not active:
            return 1
        # Target size from the latent actually sampled (width only, d = W_px // 1024, as the official code).
        return freescale.dilation_factor(int(x.shape[-1]) * self.config.latent_px, self.config.base_px)

    def __call__(self, executor: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        topts = args[-1] if args and isinstance(args[-1], dict) else kwargs.get("transformer_options", {})
        d = self.factor(args[0], topts)
        if d <= 1:
            return executor(*args, **kwargs)
        unet = executor.class_obj
        saved = []
        try:
            for name in self.config.layers:
                conv = unet.get_submodule(name)
                if isinstance(conv, torch.nn.Conv2d):
                    saved.append((conv, conv.dilation, conv.padding))
                    conv.dilation, conv.padding = (d, d), (d, d)
            return executor(*args, **kwargs)
        finally:
            for conv, dilation, padding in saved:
                conv.dilation, conv.padding = dilation, padding


def apply_restrained_dilation(model: ModelPatcher, *, dilate_percent: float = 0.7, base_px: int = freescale.BASE_PX,
                              latent_px: int | None = None) -> ModelPatcher:
    """A clone of ``model`` with restrained dilation; shared with the FreeScale Upscale node.

    ``latent_px`` (image px per latent cell) defaults to the model's latent format.
    """
    if not 0.0 <= dilate_percent <= 1.0:
        raise ValueError(f"dilate_percent must be in [0, 1], got {dilate_percent}.")
    layers = restrained_dilation_layers(model.get_model_object("diffusion_model"))
    if not layers:
        raise ValueError(
            "model: FreeScale Restrained Dilation needs an SD1.x/SDXL-class UNet (input_blocks with a "
            f"strided-conv Downsample, middle_block); {type(model.get_model_object('diffusion_model')).__name__} is not "
            "one. A DiT (Flux, Qwen-Image, SD3, Z-Image) has no convolutions to dilate: leave this node out and use "
            "Scale Fusion alone.")
    sampling = model.get_model_object("model_sampling")
    config = DilationConfig(tuple(layers), float(dilate_percent), int(base_px), int(latent_px or model_latent_px(model)))
    wrapper = RestrainedDilation(config,
                                 float(sampling.percent_to_sigma(dilate_percent)))
    patched = model.clone()
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, wrapper)
    return patched


class FreeScaleRestrainedDilation(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="UltraRes_FreeScaleRestrainedDilation",
            display_name="FreeScale Restrained Dilation",
            category="UltraRes/FreeScale",
            description=(
                "Reduces repeated objects when a model samples above its native size; start with "
                "dilate_percent 0.7 and base_size 1024 (SDXL) or 512 (SD1.x). FreeScale restrained "
                "dilated convolution (Qiu et al., 2024): during the early steps "
                "the 3×3 convolutions of the UNet's deepest down level and middle block run with "
                "dilation d = target width // base_size (2 at 2048 px, 4 at 4096 px for SDXL), which "
                "widens their receptive field to the upscaled image and suppresses repeated objects; "
                "up-block convolutions stay untouched. Use it with Scale Fusion on the upscaling "
                "stages of a FreeScale cascade. Models: SD1.x and SDXL-class UNets. Cost: none (same "
                "FLOPs); the shared model is changed only during each patched call and restored after it."),
            inputs=[
                io.Model.Input("model", tooltip="The model to prepare for large sizes (SD1.x or SDXL-class UNet). A "
                                                "clone is patched; the input is unchanged."),
                io.Float.Input("dilate_percent", default=0.7, min=0.0, max=1.0, step=0.01,
                               tooltip="Higher = stronger protection against repeated objects, lower = closer to the "
                                       "plain model; try 0.7, 0 turns it off. Fraction of the sampling steps that are "
                                       "dilated, counted from the first step of the schedule (paper dilate_tau/steps "
                                       "= 35/50 = 0.7); 0.5–0.8 is the useful range."),
                io.Int.Input("base_size", default=1024, min=64, max=16384, step=8,
                             tooltip="Set it to the size your model was trained at: 1024 for SDXL, 512 for SD1.x. "
                                     "Native size of the model in pixels: d = target width // base_size; targets up "
                                     "to base_size are not dilated."),
            ],
            outputs=[io.Model.Output(tooltip="The patched model; connect it to the sampler of the high-resolution pass. "
                                             "Restrained dilation on the deepest down level and middle block.")],
        )

    @classmethod
    def execute(cls, model: ModelPatcher, dilate_percent: float, base_size: int) -> io.NodeOutput:
        check_numbers(cls, locals())
        return io.NodeOutput(apply_restrained_dilation(model, dilate_percent=dilate_percent, base_px=base_size))


NODES = (FreeScaleRestrainedDilation,)
