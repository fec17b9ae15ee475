"""UltraPixel Apply node: the high-resolution pass as a patch of the stage-C MODEL.

UltraPixel (Ren et al., 2024, arXiv:2407.02158), Sec. 3.2, Eqs. (2)-(4): after the first
AttnBlock of each stage-C level the upscaled LR guidance is fused with the HR features and added,
as in the official code (catcathh/UltraPixel@e85d3bc ``modules/model_4stage_lite.py:341-365``).
The node validates and returns a patched clone; the patch is :func:`.ultrapixel_patch.inject_clone`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from comfy_api.latest import io

from ._checks import check_numbers
from ._schema import advanced
from .ultrapixel_loader import ULTRAPIXEL_MODEL, UltraPixelModel
from .ultrapixel_patch import ULTRAPIXEL_GUIDANCE, ULTRAPIXEL_NORM, LRFeatures, check_compatible, inject_clone

if TYPE_CHECKING:
    from comfy.model_patcher import ModelPatcher

    from ..kernels.ultrapixel import NormSettings


class UltraPixelApply(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UltraRes_UltraPixelApply",
            display_name="UltraPixel Apply",
            category="UltraRes/UltraPixel",
            description=(
                "Lets Stable Cascade draw at 2048 px and above with the composition of its 1024² version "
                "and crisp detail; start with cfg_rescale 0.7 and a stock sampler. UltraPixel (Ren et al., "
                "2024) high-resolution pass as a model patch: after the "
                "first attention block of each stage-C level, fuses the upscaled LR guidance g' "
                "with the HR features, modulated by the current step's time and a scale-aware "
                "norm, and adds it (decoder weight 0.3 / 0.5 / 0.7 below 72² / 96² / from 96² "
                "stage-C tokens). Works with any ComfyUI sampler, LoRA and negative prompts; the "
                "optional CFG rescale is the paper's cfg_rho. Use it on the stage-C model of the HR "
                "pass (latent from UltraPixel INR Upscale). Models: Stable Cascade stage C 3.6B. "
                "Cost: four small modules per step (well under 1% of the FLOPs of a 3.6B stage-C step)."),
            inputs=[
                io.Model.Input("model", tooltip="The Stable Cascade stage-C model of the high-resolution pass. A clone "
                                                "is patched."),
                ULTRAPIXEL_MODEL.Input("ultrapixel_model", tooltip="Connect the UltraPixel Loader output."),
                ULTRAPIXEL_GUIDANCE.Input("guidance", tooltip="Connect UltraPixel LR Guidance, optionally through "
                                                              "UltraPixel INR Upscale."),
                io.Float.Input("cfg_rescale", default=0.7, min=0.0, max=1.0, step=0.01,
                               tooltip="Higher = tames the harsh, oversaturated look of strong CFG; try 0.7. cfg_rho "
                                       "of the paper's CFG rescale, installed as the sampler CFG function (0 = stock "
                                       "CFG).",
                               **advanced()),
                ULTRAPIXEL_NORM.Input("norm", optional=True,
                                      tooltip="Optional: UltraPixel Scale-Aware Norm, to set the norm's scale or the "
                                              "decoder guidance weight; without it, the paper's (auto)."),
            ],
            outputs=[io.Model.Output(tooltip="Connect to your sampler (e.g. KSampler) for the high-resolution stage-C "
                                             "pass. Stage C with UltraPixel guidance at E0, E1, D0, D1.")],
        )

    @classmethod
    def execute(cls, model: ModelPatcher, ultrapixel_model: UltraPixelModel, guidance: LRFeatures,
                cfg_rescale: float, norm: NormSettings | None = None) -> io.NodeOutput:
        check_numbers(cls, locals())
        check_compatible(model, ultrapixel_model, guidance)
        clone, _ = inject_clone(model, ultrapixel_model, guidance, float(cfg_rescale), norm)
        return io.NodeOutput(clone)


NODES = (UltraPixelApply,)
