"""UltraPixel Stage C: the whole UltraPixel stage-C job (LR pass, INR, HR pass) in one node.

UltraPixel (Ren et al., 2024, arXiv:2407.02158), Sec. 3 and Fig. 3: LR pass with capture, then
the HR pass with the four guidance patches, both with DDPM on the official time grid, CFG with
the cfg_rho rescale, shift 1, and the x0 of the last HR step as output, as the official code
(catcathh/UltraPixel@e85d3bc ``inference/test_t2i.py``, ``inference/utils.py:124-126``) does. The
output LATENT goes to the stock StableCascade_StageB_Conditioning + KSampler on stage B, then
stage A.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import comfy.utils
import torch
from comfy_api.latest import io

from ._checks import check_numbers, check_vae_matches_model
from ._stage import StageProgress
from .ultrapixel_loader import ULTRAPIXEL_MODEL, UltraPixelModel
from .ultrapixel_passes import (
    LR_SIZE,
    lr_latent_size,
    lr_pass,
    lr_size_input,
    official_sigmas,
    sample_pass,
    sampling_inputs,
    stage_b_latent,
    validate_size,
    with_shift,
)
from .ultrapixel_patch import ULTRAPIXEL_NORM, check_compatible, inject_clone

if TYPE_CHECKING:
    from comfy.model_patcher import ModelPatcher
    from comfy.sd import VAE

    from ..kernels.ultrapixel import NormSettings

EFFNET_PX = 32  # stage-C effnet encoder: one latent cell per 32 px


def encode_lr_image(image: torch.Tensor, vae: VAE, lr_latent_size: tuple[int, int]) -> dict:
    """IMAGE -> stage-C latent at the LR size through the stage-C (effnet) VAE, as StableCascade_StageC_VAEEncode does."""
    h, w = lr_latent_size
    pixels = comfy.utils.common_upscale(image.movedim(-1, 1), w * EFFNET_PX, h * EFFNET_PX, "bicubic", "center")
    return {"samples": vae.encode(pixels.movedim(1, -1)[:, :, :, :3])}


class UltraPixelStageC(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UltraRes_UltraPixelStageC",
            display_name="UltraPixel Stage C",
            category="UltraRes/UltraPixel",
            description=(
                "Draws a Stable Cascade picture at 2048 px and above with the composition of its 1024² "
                "version and crisp detail; start with width/height 2048, steps 20 and cfg 4. UltraPixel "
                "(Ren et al., 2024) for Stable Cascade in one node: samples stage C at "
                "the LR size (1024² for square), captures the guidance features, then samples the "
                "target size with the UltraPixel modules fusing the INR-upscaled guidance into "
                "stage C (DDPM on the paper's grid, CFG 4 with rescale 0.7, shift 1). Connect the "
                "output to StableCascade_StageB_Conditioning and a KSampler on stage B (paper: "
                "10 steps, cfg 1.1), then a (tiled) stage-A decode. Optional image + stage-C VAE: "
                "the image is the LR source (img2img). Models: Stable Cascade stage C 3.6B + "
                "ultrapixel_t2i. Cost: a plain stage-C run at the target size plus a 1024² LR run "
                "(a quarter of the tokens of 2048²) and four small modules per step."),
            inputs=[
                io.Model.Input("model", tooltip="The Stable Cascade stage-C model; LoRA'd models work."),
                ULTRAPIXEL_MODEL.Input("ultrapixel_model", tooltip="Connect the UltraPixel Loader output."),
                *sampling_inputs(),
                io.Int.Input("batch_size", default=1, min=1, max=16,
                             tooltip="How many pictures per run; try 1. Images per run (each with its own noise)."),
                io.Image.Input("image", optional=True,
                               tooltip="Optional: a picture to start from (img2img); it sets the composition. The LR "
                                       "source image, encoded with the stage-C VAE and used instead of the LR sampling."),
                io.Vae.Input("vae", optional=True,
                             tooltip="Only needed with image. The stage-C (effnet) VAE, e.g. from the stage-C "
                                     "checkpoint."),
                ULTRAPIXEL_NORM.Input("norm", optional=True,
                                      tooltip="Optional: UltraPixel Scale-Aware Norm, to set the norm's scale or the "
                                              "decoder guidance weight; without it, the paper's (auto)."),
                lr_size_input(),
            ],
            outputs=[io.Latent.Output(display_name="stage_c",
                                      tooltip="Connect to StableCascade_StageB_Conditioning. Stage-C latent at "
                                              "ceil(H/42.67) x ceil(W/42.67)."),
                     io.Latent.Output(display_name="stage_b",
                                      tooltip="Connect to the latent_image of the stage-B KSampler: decodes to exactly "
                                              "width x height. Empty stage-B latent (B, 4, ceil(H/4), ceil(W/4))."),
                     io.Latent.Output(display_name="lr_stage_c",
                                      tooltip="The small low-resolution picture, for a quick preview. The LR pass's "
                                              "stage-C latent.")],
        )

    @classmethod
    def execute(cls, model: ModelPatcher, ultrapixel_model: UltraPixelModel, positive: Any, negative: Any,
                width: int, height: int, seed: int, steps: int, cfg: float, cfg_rescale: float, shift: float,
                batch_size: int, image: torch.Tensor | None = None, vae: VAE | None = None,
                norm: NormSettings | None = None, lr_size: int = LR_SIZE) -> io.NodeOutput:
        check_numbers(cls, locals())
        validate_size(width, height, lr_size)
        check_compatible(model, ultrapixel_model)
        lr_latent = None
        if image is not None:
            if vae is None:
                raise ValueError("vae: an image as LR source needs the stage-C VAE (effnet encoder).")
            check_vae_matches_model(model, vae)
            if int(vae.spacial_compression_encode()) != EFFNET_PX:
                raise ValueError(f"vae: this VAE encodes {vae.spacial_compression_encode()} px per latent cell, the "
                                 f"stage-C (effnet) VAE {EFFNET_PX}; connect the VAE of the stage-C checkpoint.")
            lr_latent = encode_lr_image(image, vae, lr_latent_size(width, height, lr_size))
        sampled = with_shift(model, shift)
        # LR + HR; img2img's single LR step advances the bar by `steps`
        with StageProgress(model, 2 * steps, "UltraPixel Stage C") as progress:
            guidance, lr_x0, hr_noise = lr_pass(sampled, positive, negative, width, height, batch_size, seed, steps,
                                                cfg, cfg_rescale, shift, lr_latent=lr_latent, progress=progress,
                                                lr_size=lr_size)
            hr_model, hook = inject_clone(sampled, ultrapixel_model, guidance, float(cfg_rescale), norm)
            try:
                sigmas = official_sigmas(sampled, steps)
                hr = sample_pass(hr_model, hr_noise, positive, negative, cfg, sigmas, torch.zeros_like(hr_noise),
                                 seed, progress, "HR pass")
            finally:
                hook.release()  # device copies of the modules and g' go with the run
                del hr_model
        return io.NodeOutput({"samples": hr}, {"samples": stage_b_latent(hr.shape[0], width, height)}, {"samples": lr_x0})


NODES = (UltraPixelStageC,)
