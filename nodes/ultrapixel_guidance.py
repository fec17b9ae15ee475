"""UltraPixel LR Guidance node: the low-resolution pass that captures the guidance features.

UltraPixel (Ren et al., 2024, arXiv:2407.02158), Sec. 3 and Fig. 3: stage C is sampled at the LR
size and the features after the first AttnBlock of each level are kept from the conditional half
at the last step, as in the official code (catcathh/UltraPixel@e85d3bc ``gdf/__init__.py:135-165``).
The pass itself is :func:`.ultrapixel_passes.lr_pass`; the patching is in :mod:`.ultrapixel_patch`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from comfy_api.latest import io

from ._checks import check_numbers
from ._stage import StageProgress
from .ultrapixel_passes import lr_pass, lr_size_input, sampling_inputs, validate_size
from .ultrapixel_patch import ULTRAPIXEL_GUIDANCE, check_compatible

if TYPE_CHECKING:
    from comfy.model_patcher import ModelPatcher


class UltraPixelLRGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UltraRes_UltraPixelLRGuidance",
            display_name="UltraPixel LR Guidance",
            category="UltraRes/UltraPixel",
            description=(
                "Draws the small version of the picture whose composition the high-resolution pass keeps; "
                "start with steps 20, cfg 4 and the width/height you want in the end. UltraPixel (Ren et "
                "al., 2024) low-resolution pass: samples stage C at the LR size "
                "UltraPixel uses for the target aspect ratio (1024² for square) with DDPM on the "
                "paper's time grid, and captures the stage-C features after the first attention "
                "block of each level from the conditional half at the last step (t = 0.05). Feed "
                "the guidance to UltraPixel INR Upscale / UltraPixel Apply for the high-resolution "
                "pass. Optional lr_latent (a stage-C latent, e.g. from StableCascade_StageC_VAEEncode) "
                "replaces sampling by one re-noised step (img2img). Models: Stable Cascade stage C "
                "3.6B. Cost: one stage-C run at 1024² (at most about 1/4 of a 2048² run)."),
            inputs=[io.Model.Input("model", tooltip="The Stable Cascade stage-C model; use the same one for the "
                                                    "high-resolution pass. Unpatched or LoRA'd."),
                    *sampling_inputs(),
                    io.Latent.Input("lr_latent", optional=True,
                                    tooltip="Optional: a picture to start from (img2img), as a stage-C latent; it is "
                                            "used as the LR image, resized to the LR latent size."),
                    lr_size_input()],
            outputs=[ULTRAPIXEL_GUIDANCE.Output(display_name="guidance",
                                                tooltip="Connect to UltraPixel INR Upscale or UltraPixel Apply. LR "
                                                        "features g at E0, E1, D0, D1 (cond half, last LR step)."),
                     io.Latent.Output(display_name="lr_latent",
                                      tooltip="The small low-resolution picture, for a quick preview or a stock stage "
                                              "B. The LR stage-C result (x0 of the last step).")],
        )

    @classmethod
    def execute(cls, model: ModelPatcher, positive: Any, negative: Any, width: int, height: int, seed: int,
                steps: int, cfg: float, cfg_rescale: float, shift: float,
                lr_latent: dict | None = None, lr_size: int = 1024) -> io.NodeOutput:
        check_numbers(cls, locals())
        validate_size(width, height, lr_size)
        check_compatible(model)
        with StageProgress(model, steps, "UltraPixel LR Guidance") as progress:
            guidance, x0, _ = lr_pass(model, positive, negative, width, height, 1, seed, steps, cfg, cfg_rescale,
                                      shift, lr_latent=lr_latent, progress=progress, lr_size=lr_size)
        return io.NodeOutput(guidance, {"samples": x0})


NODES = (UltraPixelLRGuidance,)
