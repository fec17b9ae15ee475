"""FreeScale tailored self-cascade: a custom SAMPLER and the all-in-one FreeScale Upscale node.

FreeScale (Qiu et al., 2024), spec §2.2/§2.3/§2.7. An upscaling stage starts from the previous
stage's image upsampled in RGB space and re-encoded (``x_up``), restarts at step
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

import torch
from comfy_api.latest import io

import comfy.samplers

from ..kernels import freescale
from .freescale_dilation import apply_restrained_dilation
from .freescale_fusion import apply_scale_fusion

FREEU_PAPER = {"b1": 1.1, "b2": 1.2, "s1": 0.6, "s2": 0.4}  # FreeScale run_freescale.py (spec §2.2)
TILE_ABOVE_PX = 2048 * 2048  # VAE decode/encode tiled above this many image pixels
SCHEDULER = "ddim_uniform"   # = SDXL "leading" timesteps (spec §0)


@dataclasses.dataclass(frozen=True)
class SelfCascadeConfig:
    cosine_scale: float
    cosine_scale_bg: float
    restart_percent: float
    mask: torch.Tensor | None  # (B, H, W) MASK at any resolution, or None


class SelfCascadeSampler(comfy.samplers.Sampler):
    """FreeScale upscaling stage as a ComfyUI sampler.

    ``latent_image`` is the upsampled latent ``x_up`` and ``noise`` the stage noise ``n`` (as
    SamplerCustomAdvanced and ``CFGGuider.sample`` pass them); ``sigmas`` the full schedule
    (spec: 50-step ``ddim_uniform``). Steps before ``int(restart_percent·steps)`` are skipped.
    """

    def __init__(self, config: SelfCascadeConfig):
        self.config = config

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None,
               denoise_mask=None, disable_pbar=False):
        import comfy.model_management

        cfg = self.config
        steps = len(sigmas) - 1
        restart = freescale.restart_step(steps, cfg.restart_percent)
        if latent_image is None:
            raise ValueError("FreeScale Self-Cascade needs the upsampled latent as latent_image.")
        if not 0 <= restart < steps:
            raise ValueError(f"restart_percent {cfg.restart_percent} leaves no step of the {steps}-step schedule.")
        model_sampling = model_wrap.inner_model.model_sampling
        timesteps = [float(model_sampling.timestep(s.reshape(1))) for s in sigmas[:-1]]
        if cfg.mask is not None:
            exponent = freescale.region_exponent(cfg.mask.to(latent_image.device), latent_image.shape[-2:],
                                                 cfg.cosine_scale, cfg.cosine_scale_bg, latent_image.shape[0])
            exponent = exponent.to(latent_image.device)
        else:
            exponent = float(cfg.cosine_scale)

        # Same wrapping as KSAMPLER, so a latent noise mask (inpainting) keeps working.
        extra_args["denoise_mask"] = denoise_mask
        model_k = comfy.samplers.KSamplerX0Inpaint(model_wrap, sigmas)
        model_k.latent_image = latent_image
        model_k.noise = noise
        s_in = latent_image.new_ones([latent_image.shape[0]])

        def denoise(x, sigma):
            return model_k(x, sigma * s_in, **extra_args)

        def on_step(i, denoised, x):
            if callback is not None:
                callback(i, denoised, x, steps)

        def before_step(i):
            comfy.model_management.throw_exception_if_processing_interrupted()

        x = freescale.self_cascade_sample(denoise, latent_image, noise, sigmas, timesteps, restart, exponent,
                                          callback=on_step, before_step=before_step)
        return model_sampling.inverse_noise_scaling(sigmas[-1], x)


COSINE_SCALE_TIP = ("Detail strength, paper cosine_scale (exponent of c(t) in c1 = c(t)^cosine_scale): larger = "
                    "weaker pull toward the upsampled image = more new detail. Paper 2.0; 1–3 (≤ 1 for 8K).")
COSINE_SCALE_BG_TIP = ("Exponent outside the mask (paper cosine_scale_bg, default 1.0; its region script uses 0.5 "
                       "with cosine_scale 3). Only used with a mask.")
MASK_TIP = ("Optional region mask (paper §region-aware detail control): non-zero pixels use cosine_scale, zero "
            "pixels cosine_scale_bg. Made binary (≠ 0) and resized nearest to the latent.")


class FreeScaleSelfCascadeSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="UltraRes_FreeScaleSelfCascadeSampler",
            display_name="FreeScale Self-Cascade Sampler",
            category="UltraRes/FreeScale",
            description=(
                "FreeScale tailored self-cascade (Qiu et al., 2024) as a SAMPLER for SamplerCustomAdvanced: "
                "feed the previous stage upsampled (VAE decode → upscale → VAE encode) as latent_image and "
                "the full schedule as sigmas (paper: 50 steps, ddim_uniform). It restarts at 30% of the "
                "steps from the noised upsampled latent and, before every Euler step, blends the state "
                "toward the re-noised upsampled latent with a cosine-decaying weight, so global structure "
                "is kept and new detail appears. Optional mask for region-aware detail. Models: SD1.x and "
                "SDXL (ε-prediction). Cost: 70% of the steps of a normal run at the stage resolution."),
            inputs=[
                io.Float.Input("cosine_scale", default=2.0, min=0.0, max=100.0, step=0.1, tooltip=COSINE_SCALE_TIP),
                io.Float.Input("restart_percent", default=0.3, min=0.0, max=0.99, step=0.01,
                               tooltip="Fraction of the schedule skipped: sampling restarts at step int(restart_percent·steps) (paper 0.3 → step 15 of 50; SDXL-Turbo 0.5). 0.2–0.5."),
                io.Float.Input("cosine_scale_bg", default=1.0, min=0.0, max=100.0, step=0.1, tooltip=COSINE_SCALE_BG_TIP),
                io.Mask.Input("mask", optional=True, tooltip=MASK_TIP),
            ],
            outputs=[io.Sampler.Output(tooltip="A sampler for SamplerCustomAdvanced (latent_image = the upsampled latent).")],
        )

    @classmethod
    def execute(cls, cosine_scale, restart_percent, cosine_scale_bg, mask=None) -> io.NodeOutput:
        config = SelfCascadeConfig(float(cosine_scale), float(cosine_scale_bg), float(restart_percent),
                                   None if mask is None else mask.detach().clone())
        return io.NodeOutput(SelfCascadeSampler(config))


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


def rgb_upsample(vae, samples: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Decode, bicubic-resize to ``size`` (H, W) px and re-encode (spec §2.2 item 2)."""
    ratio = vae.spacial_compression_decode()
    in_px = samples.shape[-2] * samples.shape[-1] * ratio * ratio
    if in_px > TILE_ABOVE_PX:
        image = vae.decode_tiled(samples, tile_x=128, tile_y=128, overlap=16)
    else:
        image = vae.decode(samples)
    image = freescale.upsample_image(image[..., :3], size)
    if size[0] * size[1] > TILE_ABOVE_PX:
        return vae.encode_tiled(image, tile_x=1024, tile_y=1024, overlap=128)
    return vae.encode(image)


def has_freeu(model) -> bool:
    import comfy_extras.nodes_freelunch as freelunch

    patches = model.model_options.get("transformer_options", {}).get("patches", {})
    return any(getattr(p, "__module__", None) == freelunch.__name__ for p in patches.get("output_block_patch", []))


def apply_freeu(model):
    """ComfyUI's own FreeU (v1) node patch with FreeScale's values; skipped if already present."""
    import comfy_extras.nodes_freelunch as freelunch

    if has_freeu(model):
        logging.info("FreeScale Upscale: the model already carries FreeU; not adding it twice.")
        return model
    node = freelunch.FreeU
    if hasattr(node, "patch"):  # V1 node (ComfyUI 0.3.x)
        return node().patch(model, **FREEU_PAPER)[0]
    return node.execute(model, **FREEU_PAPER).result[0]  # V3 node


def stage_noise(latent: dict, samples: torch.Tensor, seed: int) -> torch.Tensor:
    """Stage noise ``n`` from an explicit generator; equals ComfyUI's RandomNoise for ``seed``."""
    import comfy.sample

    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return comfy.sample.prepare_noise_inner(samples, generator, latent.get("batch_index"))


class FreeScaleUpscale(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="UltraRes_FreeScaleUpscale",
            display_name="FreeScale Upscale (Self-Cascade)",
            category="UltraRes/FreeScale",
            description=(
                "FreeScale (Qiu et al., 2024) all-in-one high-resolution cascade: takes a base latent "
                "sampled at the model's native size (e.g. 1024² SDXL, euler + ddim_uniform) and, for each "
                "target in resolutions, upsamples it in RGB space (VAE decode → bicubic → VAE encode, tiled "
                "above 2048²), then re-samples it with the tailored self-cascade sampler on a model patched "
                "with Scale Fusion, restrained dilation and FreeU. Models: SD1.x and SDXL-class UNets. "
                "Cost: 70% of `steps` per stage at each stage's size; 4096² is ≈ 16× the work of 1024² "
                "(use fast_mode at 8192²). One progress bar with previews over all stages."),
            inputs=[
                io.Model.Input("model", tooltip="SD1.x or SDXL-class model, without FreeU (FreeU is added here; a FreeU-patched model is detected and not patched twice)."),
                io.Vae.Input("vae", tooltip="VAE of the model, used for the RGB-space upsampling between stages."),
                io.Conditioning.Input("positive", tooltip="Positive conditioning (the prompt of the base image)."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning (paper: 'blurry, ugly, duplicate, poorly drawn, deformed, mosaic')."),
                io.Latent.Input("latent", tooltip="Base latent from a normal sampler at the native size (stage 0 of the cascade)."),
                io.String.Input("resolutions", default="2048, 4096",
                                tooltip="Target of each upscaling stage in pixels, comma-separated: a square size or WxH (multiples of 8; paper '2048, 4096'). Each stage roughly doubles the side."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the stage noise n (stage k uses seed + k) and of the Scale Fusion window jitter."),
                io.Int.Input("steps", default=50, min=1, max=1000,
                             tooltip="Steps of the full ddim_uniform schedule per stage (paper 50); the first 30% are skipped by the restart."),
                io.Float.Input("cfg", default=7.5, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale (paper 7.5)."),
                io.Float.Input("cosine_scale", default=2.0, min=0.0, max=100.0, step=0.1, tooltip=COSINE_SCALE_TIP),
                io.Float.Input("cosine_scale_bg", default=1.0, min=0.0, max=100.0, step=0.1, tooltip=COSINE_SCALE_BG_TIP),
                io.Boolean.Input("fast_mode", default=False,
                                 tooltip="Scale Fusion fast mode: dilated instead of full global attention. Needed for memory at 8192², slightly lower quality."),
                io.Boolean.Input("dilation", default=True,
                                 tooltip="Restrained dilated convolution (paper on; d = stage width // base width, first 70% of the steps)."),
                io.Boolean.Input("freeu", default=True,
                                 tooltip="Apply ComfyUI's FreeU (v1) with the paper's b1 1.1, b2 1.2, s1 0.6, s2 0.4 during the upscaling stages."),
                io.Mask.Input("mask", optional=True, tooltip=MASK_TIP),
            ],
            outputs=[io.Latent.Output(tooltip="Latent of the last stage (decode with VAE Decode (Tiled) at 4096² and above).")],
        )

    @classmethod
    def execute(cls, model, vae, positive, negative, latent, resolutions, seed, steps, cfg, cosine_scale,
                cosine_scale_bg, fast_mode, dilation, freeu, mask=None) -> io.NodeOutput:
        import comfy.model_management
        import comfy.utils
        import latent_preview
        from tqdm.auto import tqdm

        samples = latent["samples"]
        if samples.dim() != 4 or getattr(samples, "is_nested", False):
            raise ValueError(f"latent: expected an image latent (B, C, H, W), got shape {tuple(samples.shape)}.")
        ratio = vae.spacial_compression_encode()
        sizes = parse_resolutions(resolutions, ratio)
        base_px = max(samples.shape[-2], samples.shape[-1]) * ratio  # native size: 1024 for the paper's stage 0
        restart = freescale.restart_step(steps)

        stage_model = apply_scale_fusion(model, fast_mode=fast_mode, jitter_seed=seed & 0xFFFFFFFF, base_px=base_px)
        if dilation:
            stage_model = apply_restrained_dilation(stage_model, base_px=base_px)
        if freeu:
            stage_model = apply_freeu(stage_model)
        sampler = SelfCascadeSampler(SelfCascadeConfig(float(cosine_scale), float(cosine_scale_bg), 0.3,
                                                       None if mask is None else mask.detach().clone()))

        per_stage = steps - restart
        total = per_stage * len(sizes)
        pbar = comfy.utils.ProgressBar(total)
        previewer = latent_preview.get_previewer(model.load_device, model.model.latent_format)
        x = samples
        with tqdm(total=total, desc="FreeScale", unit="step") as console:
            for stage, size in enumerate(sizes):
                comfy.model_management.throw_exception_if_processing_interrupted()
                x_up = rgb_upsample(vae, x, size)
                stage_seed = (seed + stage) % 2**64
                noise = stage_noise(latent, x_up, stage_seed)
                sigmas = comfy.samplers.calculate_sigmas(stage_model.get_model_object("model_sampling"), SCHEDULER, steps)
                guider = comfy.samplers.CFGGuider(stage_model)
                guider.set_conds(positive, negative)
                guider.set_cfg(cfg)

                def callback(i, x0, x_i, total_steps, offset=stage * per_stage):
                    done = offset + i - restart + 1
                    preview = previewer.decode_latent_to_preview_image("JPEG", x0) if previewer else None
                    pbar.update_absolute(done, total, preview)
                    console.update(done - console.n)
                    console.set_postfix_str(f"stage {size[1]}x{size[0]}")

                x = guider.sample(noise, x_up, sampler, sigmas, callback=callback, disable_pbar=True, seed=stage_seed)
                x = x.to(comfy.model_management.intermediate_device())
        out = {k: v for k, v in latent.items() if k not in ("samples", "noise_mask")}
        out["samples"] = x
        return io.NodeOutput(out)


NODES = (FreeScaleSelfCascadeSampler, FreeScaleUpscale)
