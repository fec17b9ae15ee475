"""FreeScale tailored self-cascade: a custom SAMPLER and the all-in-one FreeScale Upscale node.

FreeScale (Qiu et al., arXiv:2412.09626, 2024): tailored self-cascade upscaling and region-aware
detail control (paper Fig. 2(a)); official code ali-vilab/FreeScale@d5a2256 ``pipeline_freescale.py:855-994``
and ``pipeline_freescale_imgen.py:917-944``. An upscaling stage starts from the previous stage's
image upsampled in RGB space and re-encoded (``x_up``), restarts at step
``int(0.3·steps)`` from ``x_up + σ_r·n`` and, before every model call, pulls the state back
toward ``x_up + σ_i·n`` by the cosine-decaying skip residual ``c1 = c(t)^cosine_scale`` (per
pixel with a region mask). The loop lives in ``kernels/freescale.py``
(:func:`self_cascade_sample`); here it is exposed as a ComfyUI ``Sampler`` (for
SamplerCustomAdvanced) and driven stage by stage by :class:`FreeScaleUpscale`, which also applies
Scale Fusion, restrained dilation and ComfyUI's own FreeU to the model.
"""
from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import comfy.model_management
import comfy.samplers
import comfy_extras.nodes_freelunch as freelunch
import torch
from comfy_api.latest import io

from ..kernels import freescale
from . import _stage as stage
from . import freescale_fusion_dit
from ._checks import check_latent_matches_vae, check_numbers, check_ram, check_vae_matches_model
from ._schema import advanced, keep_detail_input
from .freescale_dilation import apply_restrained_dilation, restrained_dilation_layers
from .freescale_fusion import apply_scale_fusion

if TYPE_CHECKING:
    from comfy.model_patcher import ModelPatcher
    from comfy.samplers import KSamplerX0Inpaint
    from comfy.sd import VAE

log = logging.getLogger(__name__)

FREEU_PAPER = {"b1": 1.1, "b2": 1.2, "s1": 0.6, "s2": 0.4}  # ali-vilab/FreeScale@d5a2256 run_freescale.py
# VAE decode/encode between stages: tiled above 2048² image px, with 128-latent decode tiles and
# 1024-px encode tiles.
TILING = stage.Tiling(decode_above_px=2048 * 2048, encode_above_px=2048 * 2048,
                      decode_tiles={"tile_x": 128, "tile_y": 128, "overlap": 16},
                      encode_tiles={"tile_x": 1024, "tile_y": 1024, "overlap": 128})


@dataclasses.dataclass(frozen=True)
class SelfCascadeConfig:
    cosine_scale: float
    cosine_scale_bg: float
    restart_percent: float
    mask: torch.Tensor | None  # (B, H, W) MASK at any resolution, or None


def self_cascade_function(model: KSamplerX0Inpaint, x: torch.Tensor, sigmas: torch.Tensor,
                          extra_args: dict | None = None, callback: Callable[[dict], None] | None = None,
                          disable: bool | None = None, *, config: SelfCascadeConfig) -> torch.Tensor:
    """The self-cascade as a k-diffusion sampler function for ComfyUI's ``KSAMPLER``.

    ``KSAMPLER`` hands it the upsampled latent ``x_up`` as ``model.latent_image`` and the stage
    noise ``n`` as ``model.noise`` (as SamplerCustomAdvanced and ``CFGGuider.sample`` pass them);
    ``sigmas`` is the full schedule (50-step ``ddim_uniform`` in the paper). Steps before
    ``int(restart_percent·steps)`` are skipped.
    """
    x_up, noise = model.latent_image, model.noise
    steps = len(sigmas) - 1
    restart = freescale.restart_step(steps, config.restart_percent)
    if x_up is None:
        raise ValueError("FreeScale Self-Cascade needs the upsampled latent as latent_image.")
    if not 0 <= restart < steps:
        raise ValueError(f"restart_percent {config.restart_percent} leaves no step of the {steps}-step schedule.")
    model_sampling = model.inner_model.inner_model.model_sampling
    timesteps = [float(model_sampling.timestep(s.reshape(1))) for s in sigmas[:-1]]
    if max(timesteps) <= 1.0:  # a flow model whose timestep is σ itself (Flux): the paper's 0..999 scale
        timesteps = [t * freescale.NUM_TRAIN_TIMESTEPS for t in timesteps]
    if config.mask is not None:
        exponent = freescale.region_exponent(config.mask.to(x_up.device), x_up.shape[-2:], config.cosine_scale,
                                             config.cosine_scale_bg, x_up.shape[0]).to(x_up.device)
    else:
        exponent = float(config.cosine_scale)

    def noised(sigma: torch.Tensor, n: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return model_sampling.noise_scaling(sigma.reshape(1), n, z)  # k-space x_up + σ·n; flow (1 − σ)·x_up + σ·n

    return freescale.sample_self_cascade(model, x, sigmas, extra_args, callback, disable, x_up=x_up, noise=noise,
                                         timesteps=timesteps, restart_index=restart, exponent=exponent, noised=noised)


def self_cascade_sampler(config: SelfCascadeConfig) -> comfy.samplers.KSAMPLER:
    """ComfyUI SAMPLER running the FreeScale self-cascade with ``config``."""
    return comfy.samplers.KSAMPLER(self_cascade_function, extra_options={"config": config})


COSINE_SCALE_TIP = ("Higher = more new detail, lower = closer to the upsampled image; try 2 (1 or less at 8K). "
                    "Paper cosine_scale, the exponent of c(t) in the skip-residual weight c1 = c(t)^cosine_scale: "
                    "larger = weaker pull toward the upsampled image. Paper 2.0; useful 1–3 (≤ 1 for 8K).")
COSINE_SCALE_BG_TIP = ("Detail strength outside the mask, as cosine_scale is inside it: higher = more new detail "
                       "there; try 1. Paper cosine_scale_bg (default 1.0; its region script uses 0.5 with "
                       "cosine_scale 3). Only used with a mask.")
MASK_TIP = ("Optional: paint where you want a different amount of new detail; white areas use cosine_scale, "
            "black areas cosine_scale_bg. Paper: region-aware detail control. Made binary (≠ 0) and resized "
            "nearest to the latent.")


class FreeScaleSelfCascadeSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="UltraRes_FreeScaleSelfCascadeSampler",
            display_name="FreeScale Self-Cascade Sampler",
            category="UltraRes/FreeScale",
            description=(
                "Adds new fine detail to an upsampled image while keeping its layout; start with "
                "cosine_scale 2 and restart_percent 0.3 on a 50-step ddim_uniform schedule. FreeScale "
                "tailored self-cascade (Qiu et al., 2024) as a SAMPLER for SamplerCustomAdvanced: feed the "
                "previous stage upsampled (VAE decode → upscale → VAE encode) as latent_image and "
                "the full schedule as sigmas (paper: 50 steps, ddim_uniform). It restarts at 30% of the "
                "steps from the noised upsampled latent and, before every Euler step, blends the state "
                "toward the re-noised upsampled latent with a cosine-decaying weight, so global structure "
                "is kept and new detail appears. Optional mask for region-aware detail. Models: SD1.x and "
                "SDXL (ε-prediction). Cost: 70% of the steps of a normal run at the stage resolution."),
            inputs=[
                io.Float.Input("cosine_scale", default=2.0, min=0.0, max=100.0, step=0.1, tooltip=COSINE_SCALE_TIP),
                io.Float.Input("restart_percent", default=0.3, min=0.0, max=0.99, step=0.01,
                               tooltip="Higher = stays closer to the upsampled image and runs fewer steps, lower = "
                                       "redraws more of it; try 0.3. Fraction of the schedule skipped: sampling "
                                       "restarts at step int(restart_percent·steps) (paper 0.3 → step 15 of 50; "
                                       "SDXL-Turbo 0.5). Useful 0.2–0.5."),
                io.Float.Input("cosine_scale_bg", default=1.0, min=0.0, max=100.0, step=0.1, tooltip=COSINE_SCALE_BG_TIP,
                               **advanced()),
                io.Mask.Input("mask", optional=True, tooltip=MASK_TIP),
            ],
            outputs=[io.Sampler.Output(tooltip="Connect to SamplerCustomAdvanced's sampler, with the upsampled latent as "
                                               "its latent_image.")],
        )

    @classmethod
    def execute(cls, cosine_scale: float, restart_percent: float, cosine_scale_bg: float,
                mask: torch.Tensor | None = None) -> io.NodeOutput:
        check_numbers(cls, locals())
        config = SelfCascadeConfig(float(cosine_scale), float(cosine_scale_bg), float(restart_percent),
                                   None if mask is None else mask.detach().clone())
        return io.NodeOutput(self_cascade_sampler(config))


def parse_resolutions(text: str, multiple: int) -> list[tuple[int, int]]:
    """``"2048, 4096"`` / ``"2048x1536; 4096"`` → ``[(H, W), ...]``; ``WxH`` is width × height."""
    sizes = []
    for item in filter(None, (p.strip() for p in re.split(r"[,;]", text))):
        m = re.fullmatch(r"(\d+)\s*(?:[xX×]\s*(\d+))?", item)
        if not m:
            raise ValueError(f"resolutions: cannot read {item!r}; use sizes like '2048, 4096' or '2048x1536'.")
        w = int(m.group(1))
        h = int(m.group(2)) if m.group(2) else w
        if w % multiple or h % multiple or w <= 0 or h <= 0:
            raise ValueError(f"resolutions: {item!r} must be positive multiples of {multiple} px.")
        sizes.append((h, w))
    if not sizes:
        raise ValueError("resolutions: give at least one target size, e.g. '2048, 4096'.")
    return sizes


def check_stages_ram(samples: torch.Tensor, latent_px: int, sizes: list[tuple[int, int]]) -> None:
    """Refuse before the first stage when the largest stage's images and latents would not fit in RAM."""
    batch, channels = samples.shape[0], samples.shape[1]
    src = (samples.shape[-2] * latent_px, samples.shape[-1] * latent_px)
    for size in sizes:
        check_ram(f"resolutions: the stage {src[1]}x{src[0]} -> {size[1]}x{size[0]} px",
                  stage.stage_ram_bytes(batch, src, size, channels, latent_px),
                  "Use smaller resolutions or a machine with more RAM.")
        src = size


def has_freeu(model: ModelPatcher) -> bool:
    """Does ``model`` already carry ComfyUI's FreeU output-block patch?"""
    patches = model.model_options.get("transformer_options", {}).get("patches", {})
    return any(getattr(p, "__module__", None) == freelunch.__name__ for p in patches.get("output_block_patch", []))


def freeu_widths(model: ModelPatcher) -> tuple[list[int], list[int]]:
    """``(scaled, missing)``: the feature widths ComfyUI's FreeU scales (4× and 2× the UNet's base
    width: 1280 and 640 on SDXL) and those of them no output block of ``model`` has.

    FreeU acts only on output blocks of exactly those widths and silently does nothing on others.
    """
    unet = model.model.model_config.unet_config
    base = unet["model_channels"]
    widths = {base * m for m in unet.get("channel_mult", ())}
    scaled = [base * 4, base * 2]
    return scaled, [w for w in scaled if w not in widths]


def apply_freeu(model: ModelPatcher) -> ModelPatcher:
    """ComfyUI's own FreeU (v1) node patch with FreeScale's values; skipped if already present.

    Warns when the UNet's widths leave FreeU (partly) idle, instead of letting it do nothing unseen.
    """
    if has_freeu(model):
        log.info("FreeScale Upscale: the model already carries FreeU; not adding it twice.")
        return model
    scaled, missing = freeu_widths(model)
    if missing:
        log.warning("FreeScale Upscale: ComfyUI's FreeU scales output blocks of %s channels, but this UNet has "
                    "none of %s channels, so FreeU does %s here (set freeu off to silence this).",
                    " and ".join(map(str, scaled)), " or ".join(map(str, missing)),
                    "nothing" if len(missing) == len(scaled) else "only part of its work")
    node = freelunch.FreeU
    if hasattr(node, "patch"):  # V1 node (ComfyUI 0.3.x)
        return node().patch(model, **FREEU_PAPER)[0]
    return node.execute(model, **FREEU_PAPER).result[0]  # V3 node


class FreeScaleUpscale(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="UltraRes_FreeScaleUpscale",
            display_name="FreeScale Upscale (Self-Cascade)",
            category="UltraRes/FreeScale",
            description=(
                "Upscales a base image 2× to 4× (8× with fast_mode) with new, coherent detail and no "
                "repeated objects; start with resolutions '2048, 4096', 50 steps and cfg 7.5 on a 1024² "
                "SDXL base. FreeScale (Qiu et al., 2024) all-in-one high-resolution cascade: takes a base latent "
                "sampled at the model's native size (e.g. 1024² SDXL, euler + ddim_uniform) and, for each "
                "target in resolutions, upsamples it in RGB space (VAE decode → bicubic → VAE encode, tiled "
                "above 2048²), then re-samples it with the tailored self-cascade sampler on a model patched "
                "with Scale Fusion, restrained dilation and FreeU. Models: SD1.x and SDXL-class UNets; Flux.1, "
                "Flux.2, Qwen-Image, Z-Image and SD3 DiTs (Scale Fusion on their joint attention and the self-cascade "
                "in their flow space; dilation and FreeU have no DiT counterpart and are skipped; SD3's position "
                "table ends at 3072 px). "
                "Cost: 70% of the steps per stage at each stage's size; 4096² is ≈ 16× the work of 1024² "
                "(use fast_mode at 8192²). One progress bar with previews over all stages."),
            inputs=[
                io.Model.Input("model", tooltip="The model that made the base image (SD1.x, SDXL, Flux, Flux.2, "
                                                "Qwen-Image, Z-Image or SD3). "
                                                "Connect it "
                                                "without FreeU: FreeU is added here, and a FreeU-patched model is "
                                                "detected and not patched twice."),
                io.Vae.Input("vae", tooltip="The VAE of that model. Used for the RGB-space upsampling between stages."),
                io.Conditioning.Input("positive", tooltip="The prompt of the base image; keep it the same so the "
                                                          "picture keeps its content. Positive conditioning."),
                io.Conditioning.Input("negative", tooltip="What to avoid; try the paper's 'blurry, ugly, duplicate, "
                                                          "poorly drawn, deformed, mosaic'. Negative conditioning."),
                io.Latent.Input("latent", tooltip="The base image as a latent, from a normal sampler at the model's "
                                                  "native size (e.g. 1024² on SDXL): stage 0 of the cascade."),
                io.String.Input("resolutions", default="2048, 4096",
                                tooltip="The sizes the image grows through, smallest first; try '2048, 4096' on SDXL. "
                                        "Target of each upscaling stage in pixels, comma-separated: a square size or "
                                        "WxH (multiples of 8; paper '2048, 4096'). Each stage roughly doubles the side."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Change it for another variation of the added detail; keep it to reproduce a "
                                     "result. Seed of the stage noise n (stage k uses seed + k) and of the Scale "
                                     "Fusion window jitter."),
                io.Int.Input("steps", default=50, min=1, max=1000,
                             tooltip="More = slower and a little finer, fewer = faster and rougher; try 50. Steps of "
                                     "the full schedule per stage, on the DDIM leading timesteps i·⌊1000/N⌋ + 1 "
                                     "(paper 50); the first int(0.3·steps) are skipped by the restart."),
                io.Float.Input("cfg", default=7.5, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Higher = follows the prompt more strongly, with harsher contrast; try 7.5. "
                                       "Classifier-free guidance scale (paper 7.5)."),
                io.Float.Input("cosine_scale", default=2.0, min=0.0, max=100.0, step=0.1, tooltip=COSINE_SCALE_TIP),
                io.Float.Input("cosine_scale_bg", default=1.0, min=0.0, max=100.0, step=0.1, tooltip=COSINE_SCALE_BG_TIP,
                               **advanced()),
                io.Boolean.Input("fast_mode", default=False,
                                 tooltip="Turn on at 8192² to fit in memory: faster and lighter, slightly lower "
                                         "quality; leave off up to 4096². Scale Fusion fast mode: dilated instead "
                                         "of full global attention."),
                io.Boolean.Input("dilation", default=True,
                                 tooltip="On = fewer repeated objects at large sizes; leave on. Restrained dilated "
                                         "convolution (paper on; d = stage width // base width, first 70% of the "
                                         "steps). UNets only: skipped on a DiT, which has no such convolutions.",
                                 **advanced()),
                io.Boolean.Input("freeu", default=True,
                                 tooltip="On = the paper's setting; leave on. Applies ComfyUI's FreeU (v1) with the "
                                         "paper's b1 1.1, b2 1.2, s1 0.6, s2 0.4 during the upscaling stages. "
                                         "UNets only: skipped on a DiT.",
                                 **advanced()),
                keep_detail_input(),
                io.Mask.Input("mask", optional=True, tooltip=MASK_TIP),
            ],
            outputs=[io.Latent.Output(tooltip="The upscaled image as a latent; decode it with VAE Decode (Tiled) at "
                                              "4096² and above. Latent of the last stage.")],
        )

    @classmethod
    def execute(cls, model: ModelPatcher, vae: VAE, positive: list, negative: list, latent: dict, resolutions: str,
                seed: int, steps: int, cfg: float, cosine_scale: float, cosine_scale_bg: float, fast_mode: bool,
                dilation: bool, freeu: bool, keep_detail: bool = False, mask: torch.Tensor | None = None
                ) -> io.NodeOutput:
        check_numbers(cls, locals())
        samples = latent["samples"]
        check_vae_matches_model(model, vae)
        check_latent_matches_vae(samples, vae, "latent")
        ratio = stage.latent_px(vae)
        sizes = parse_resolutions(resolutions, ratio)
        base_px = max(samples.shape[-2], samples.shape[-1]) * ratio  # native size: 1024 for the paper's stage 0
        check_stages_ram(samples, ratio, sizes)
        restart = freescale.restart_step(steps)
        sigmas = stage.leading_sigmas(model, steps)

        stage.check_keep_detail(model, bool(keep_detail))
        diffusion_model = model.get_model_object("diffusion_model")
        freescale_fusion_dit.check_position_table(freescale_fusion_dit.position_table_px(diffusion_model, ratio),
                                                  max(sizes, key=max), "resolutions: FreeScale Upscale")
        stage_model = apply_scale_fusion(model, fast_mode=fast_mode, jitter_seed=seed & 0xFFFFFFFF, base_px=base_px,
                                         latent_px=ratio)
        unet = bool(restrained_dilation_layers(diffusion_model))
        if not unet and (dilation or freeu):
            log.info("FreeScale Upscale: restrained dilation and FreeU act on a UNet's convolutions and skip "
                     "connections; this %s has neither, so they are skipped (Scale Fusion and the self-cascade run).",
                     type(diffusion_model).__name__)
        if dilation and unet:
            stage_model = apply_restrained_dilation(stage_model, base_px=base_px, latent_px=ratio)
        if freeu and unet:
            stage_model = apply_freeu(stage_model)
        sampler = self_cascade_sampler(SelfCascadeConfig(float(cosine_scale), float(cosine_scale_bg), 0.3,
                                                         None if mask is None else mask.detach().clone()))

        x = samples
        with stage.StageProgress(model, (steps - restart) * len(sizes), "FreeScale") as progress:
            for k, size in enumerate(sizes):
                comfy.model_management.throw_exception_if_processing_interrupted()
                x_up = stage.reencode(vae, x, size, freescale.upsample_image, TILING, keep_detail=bool(keep_detail))
                stage_seed = (seed + k) % 2**64
                noise = stage.noise_for(x_up, stage_seed, latent.get("batch_index"))
                callback = progress.callback(f"stage {size[1]}x{size[0]}", first_step=restart)
                guider = stage.cfg_guider(stage_model, positive, negative, cfg)
                x = guider.sample(noise, x_up, sampler, sigmas, callback=callback, disable_pbar=True, seed=stage_seed)
                x = x.to(comfy.model_management.intermediate_device())
        out = {k: v for k, v in latent.items() if k not in ("samples", "noise_mask")}
        out["samples"] = x
        return io.NodeOutput(out)


NODES = (FreeScaleSelfCascadeSampler, FreeScaleUpscale)
