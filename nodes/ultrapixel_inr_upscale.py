"""UltraPixel INR Upscale node: g -> g' at the target stage-C size, once per size.

UltraPixel (Ren et al., 2024, arXiv:2407.02158), Sec. 3.1 "Continuous upsampling" and Fig. 4; the
module is the official ``TransInr_withnorm`` (catcathh/UltraPixel@e85d3bc
``modules/inr_fea_res_lite.py:289-397``), whose upscale does not depend on the HR feature or the
step, so it is computed here once and reused by UltraPixel Apply at every step.
"""
from __future__ import annotations

import copy
import dataclasses

import comfy.model_management
import torch
from comfy_api.latest import io

from ..kernels.ultrapixel import stage_c_latent_size
from ..kernels.ultrapixel_config import INJECTION_POINTS
from ._checks import check_numbers
from .ultrapixel_loader import ULTRAPIXEL_MODEL, UltraPixelModel
from .ultrapixel_passes import size_inputs, stage_b_latent, validate_size
from .ultrapixel_patch import ULTRAPIXEL_GUIDANCE, LRFeatures


def upscale_features(ultrapixel_model: UltraPixelModel, guidance: LRFeatures,
                     size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """g' of every point at ``size``, computed on the torch device, returned on the intermediate device."""
    device = comfy.model_management.get_torch_device()
    dtype = ultrapixel_model.dtype or comfy.model_management.unet_dtype(device)
    out = {}
    for point in INJECTION_POINTS:
        comfy.model_management.throw_exception_if_processing_interrupted()
        module = copy.deepcopy(ultrapixel_model.modules[point]).to(device=device, dtype=dtype)
        with torch.no_grad():
            g = guidance.features[point].to(device=device, dtype=dtype)
            out[point] = module.upscale_guidance(g, size).to(comfy.model_management.intermediate_device())
        del module
    return out


class UltraPixelINRUpscale(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UltraRes_UltraPixelINRUpscale",
            display_name="UltraPixel INR Upscale",
            category="UltraRes/UltraPixel",
            description=(
                "Prepares the guidance and the empty latents for your target size, so the high-resolution "
                "pass runs with a stock sampler; set width/height to the final size (try 2048). UltraPixel "
                "(Ren et al., 2024) continuous upsampling: the implicit neural "
                "representation of each guidance module turns the LR features g into g' at the "
                "target stage-C size (Fig. 4), once per size instead of once per step. Outputs the "
                "upscaled guidance and an empty stage-C latent of UltraPixel's size "
                "ceil(px / 42.67) (ComfyUI's empty latent uses px // 42) for a stock sampler after "
                "UltraPixel Apply. Models: UltraPixel weights for Stable Cascade stage C 3.6B. Cost: "
                "milliseconds to a second (one small MLP per HR position)."),
            inputs=[
                ULTRAPIXEL_MODEL.Input("ultrapixel_model", tooltip="Connect the UltraPixel Loader output."),
                ULTRAPIXEL_GUIDANCE.Input("guidance", tooltip="Connect UltraPixel LR Guidance."),
                *size_inputs(),
            ],
            outputs=[ULTRAPIXEL_GUIDANCE.Output(display_name="guidance",
                                                tooltip="Connect to UltraPixel Apply. Guidance with g' at the target "
                                                        "size."),
                     io.Latent.Output(display_name="stage_c_latent",
                                      tooltip="Connect to the latent_image of the stage-C sampler for the high-resolution "
                                              "pass. Empty stage-C latent (B, 16, ceil(H/42.67), ceil(W/42.67))."),
                     io.Latent.Output(display_name="stage_b_latent",
                                      tooltip="Connect to the latent_image of the stage-B KSampler. Empty stage-B latent "
                                              "(B, 4, ceil(H/4), ceil(W/4)).")],
        )

    @classmethod
    def execute(cls, ultrapixel_model: UltraPixelModel, guidance: LRFeatures, width: int,
                height: int) -> io.NodeOutput:
        check_numbers(cls, locals())
        validate_size(width, height)
        if {p: int(g.shape[1]) for p, g in guidance.features.items()} != ultrapixel_model.channels():
            raise ValueError("guidance: captured on a stage C whose channels do not match ultrapixel_model.")
        size = stage_c_latent_size(height, width)
        out = upscale_features(ultrapixel_model, guidance, size)
        upscaled = dataclasses.replace(guidance, upscaled=out, upscaled_size=size, upscaled_by=ultrapixel_model)
        batch = next(iter(guidance.features.values())).shape[0]
        return io.NodeOutput(upscaled, {"samples": torch.zeros(batch, 16, *size)},
                             {"samples": stage_b_latent(batch, width, height)})


NODES = (UltraPixelINRUpscale,)
