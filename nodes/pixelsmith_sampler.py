"""Pixelsmith (Tragakis et al., 2024) as a ComfyUI SAMPLER: guided patch denoising with the Slider.

Spec: ``docs/algorithms.md`` §1.4-1.8 and §1.12; the loop itself is ``kernels/pixelsmith.py``.

How it plugs into ComfyUI
-------------------------
:class:`PixelsmithSampler` subclasses ``comfy.samplers.Sampler``. A guider (``CFGGuider`` or any
subclass: DualCFG, PerpNeg, ...) calls ``sample(model_wrap=guider, sigmas, extra_args, callback,
noise, latent_image)`` with the upscaled guidance latent ``z_up`` as ``latent_image`` (already
``process_latent_in``-scaled) and the node's noise. The kernel runs in the model's own
parameterisation, ``x = α(σ)·z + σ·n``, with ``α`` read from ``model_sampling.noise_scaling``
(``α = 1``: ε/v-prediction k-space, spec §1.12; ``α = 1 - σ``: rectified flow, SD3/Flux).

Per patch batch the denoiser calls the guider itself, ``model_wrap(y, σ, model_options, seed)``,
so every guider, model patch and wrapper keeps working. Conditioning that depends on *where* the
patch is is fixed **before** that call, by handing the guider patch-specific copies of its
processed conds (``guider.conds``, restored in ``finally``) in which

* every spatial model cond (``CONDNoiseShape`` at the latent's size: ``c_concat`` of inpainting /
  IP2P / concat models, ``noise_concat``, ...) is sliced to the patch windows, patch-major;
* ControlNet hints (plain ``comfy.controlnet.ControlNet`` chains) are resized once to the full
  latent as ComfyUI would, and each per-patch copy of the ControlNet gets its windows;
* on SDXL-class models only (``comfy.model_base.SDXL``), the crop fields of the ADM vector ``y``
  (``[pooled | h | w | crop_h | crop_w | target_h | target_w]``, 256 each) are re-embedded with the
  model's own ``embedder`` per patch (spec §1.8): ``fixed`` = (top, left)·ratio, ``official`` =
  (left, left)·ratio as the official code does, ``zero`` = leave the conditioning's crop (0).
  ``original_size``/``target_size`` stay the full image, as in the official code.

This replaces an APPLY_MODEL wrapper: by the time such a wrapper runs, ComfyUI has already cut
spatial conds to the patch *size* at offset (0, 0) (``CONDNoiseShape.process_cond``), so the right
window can no longer be recovered there. Conditioning the sampler cannot place per patch
(regional ``area``/``mask`` conds, T2I adapters, Control-LoRAs, ControlNets with extra concat
inputs) is refused with a clear error instead of being silently squashed into every patch.

Memory: with ``state_device`` = cpu (or auto on big latents) ``x``, ``x_prev``, ``τ``, ``z_up`` and
the noise live in CPU RAM (pinned when CUDA is present) and only patches go to the model's device.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from comfy_api.latest import io

import comfy.conds
import comfy.controlnet
import comfy.model_base
import comfy.model_management
import comfy.samplers
import comfy.utils

from ..kernels import pixelsmith

log = logging.getLogger(__name__)

MODES = ("faithful", "fast")
CROP_MODES = ("fixed", "official", "zero")
STATE_DEVICES = ("auto", "device", "cpu")
# auto: keep the full-size state in CPU RAM once one latent-size tensor exceeds this.
AUTO_CPU_STATE_BYTES = 256 << 20
PROGRESS_UNITS = 1000  # ProgressBar resolution over the whole job (all patches × steps)
PREVIEW_MAX_SIDE = 128  # latent px of the live preview handed to the callback
FINAL_X0_MAX_PIXELS = 512 * 512  # latent px: larger results are not handed whole to the callback
MAX_AUTO_PATCH_BATCH = 64


@dataclasses.dataclass(frozen=True)
class PixelsmithConfig:
    slider: int               # S, guided steps
    patch_size: int           # P, latent px
    band: int                 # averaging band half-width, latent px
    mode: str                 # faithful | fast
    patch_batch: int          # patches per model call in fast mode; 0 = auto
    crop_mode: str            # fixed | official | zero (SDXL only)
    state_device: str         # auto | device | cpu


def validate_config(config: PixelsmithConfig) -> None:
    """Clear errors that name the offending input."""
    if config.slider < 0:
        raise ValueError(f"slider must be >= 0 (guided steps), got {config.slider}")
    if config.patch_size < 8:
        raise ValueError(f"patch_size must be >= 8 latent px, got {config.patch_size}")
    if not 0 <= config.band < config.patch_size:
        raise ValueError(f"band must be in [0, patch_size), got {config.band}")
    if config.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {config.mode!r}")
    if config.patch_batch < 0:
        raise ValueError(f"patch_batch must be >= 0 (0 = auto), got {config.patch_batch}")
    if config.crop_mode not in CROP_MODES:
        raise ValueError(f"crop_conditioning must be one of {CROP_MODES}, got {config.crop_mode!r}")
    if config.state_device not in STATE_DEVICES:
        raise ValueError(f"state_device must be one of {STATE_DEVICES}, got {config.state_device!r}")


# --------------------------------------------------------------------------------------------- #
# Per-patch conditioning
# --------------------------------------------------------------------------------------------- #


def _slice_patch_major(t: torch.Tensor, boxes, batch: int) -> torch.Tensor:
    """``(b, ..., H, W)`` → ``(n·B, ..., h, w)``: each window, repeated to the latent batch B."""
    parts = [comfy.utils.repeat_to_batch_size(t[..., r, c], batch) for r, c in (b.slices for b in boxes)]
    return torch.cat(parts, dim=0)


class PatchConditioning:
    """Builds the guider's conds for a batch of patch windows (see module docstring)."""

    def __init__(self, conds: dict, inner_model, latent_hw: tuple[int, int], batch: int, crop_mode: str):
        self.conds = conds
        self.latent_hw = latent_hw
        self.batch = batch
        for name, items in conds.items():
            for c in items:
                if c.get("area") is not None or c.get("mask") is not None:
                    raise ValueError(
                        f"Pixelsmith sampler: the {name} conditioning has an area or mask (regional "
                        "prompting); it cannot be placed per patch. Remove ConditioningSetArea/"
                        "SetMask before this sampler.")
                control = c.get("control")
                while control is not None:
                    if (not isinstance(control, comfy.controlnet.ControlNet)
                            or isinstance(control, comfy.controlnet.ControlLora)
                            or control.extra_concat_orig):
                        raise ValueError(
                            f"Pixelsmith sampler: the {name} conditioning carries a "
                            f"{type(control).__name__}, whose hint cannot be sliced per patch (only "
                            "plain ControlNets can). Apply it on the base stage only.")
                    control = control.previous_controlnet
        self._full_hints: dict[int, torch.Tensor] = {}  # id(control) → hint at the full latent size
        self.embedder = None
        if crop_mode != "zero" and isinstance(inner_model, comfy.model_base.SDXL):
            self.embedder = inner_model.embedder  # Timestep(256), SDXL micro-conditioning
        self.crop_mode = crop_mode
        latent_format = getattr(inner_model, "latent_format", None)
        # ComfyUI encodes SDXL's default width/height as latent × 8 (samplers.encode_model_conds);
        # crop coordinates use the same ratio unless the latent format says otherwise.
        self.px_per_latent = int(getattr(latent_format, "spacial_downscale_ratio", 8))

    def _crop_y(self, y: torch.Tensor, boxes) -> torch.Tensor:
        """ADM ``(b, D)`` → ``(n·B, D)`` with per-window crop_h/crop_w embeddings (spec §1.8)."""
        d = y.shape[1]
        crop_at = d - 4 * 256  # [.. | crop_h | crop_w | target_h | target_w]
        base = comfy.utils.repeat_to_batch_size(y, self.batch)
        out = []
        r = self.px_per_latent
        for b in boxes:
            crop_h = b.top * r if self.crop_mode == "fixed" else b.left * r  # official: (j−p)·8 twice
            crop_w = b.left * r
            emb = self.embedder(torch.tensor([float(crop_h), float(crop_w)]))  # (2, 256)
            yy = base.clone()
            yy[:, crop_at:crop_at + 512] = emb.reshape(1, 512).to(yy.device, yy.dtype)
            out.append(yy)
        return torch.cat(out, dim=0)

    def _control_for_boxes(self, control, boxes):
        """Copy of a ControlNet chain whose hints are the patch windows of the full-size hint.

        ComfyUI resizes a hint to the model input (``common_upscale``, "center" crop) on first
        use; here that is done once for the full latent, then each window is cut out (in the
        hint's own px: latent px × compression ratio) so every patch sees its part of the hint.
        """
        if control is None:
            return None
        H, W = self.latent_hw
        ratio = control.compression_ratio
        if control.vae is not None:
            ratio *= control.vae.spacial_compression_encode()
        full = self._full_hints.get(id(control))
        if full is None:
            full = comfy.utils.common_upscale(control.cond_hint_original, W * ratio, H * ratio,
                                              control.upscale_algorithm, "center")
            self._full_hints[id(control)] = full
        parts = [comfy.utils.repeat_to_batch_size(
            full[..., b.top * ratio:(b.top + b.height) * ratio, b.left * ratio:(b.left + b.width) * ratio],
            self.batch) for b in boxes]
        c = control.copy()
        c.cond_hint_original = torch.cat(parts, dim=0)  # (n·B, 3, h·r, w·r), patch-major
        c.timestep_range = control.timestep_range  # set by pre_run on the original
        c.model_sampling_current = control.model_sampling_current
        c.previous_controlnet = self._control_for_boxes(control.previous_controlnet, boxes)
        return c

    def for_boxes(self, boxes) -> dict:
        out = {}
        for name, items in self.conds.items():
            new_items = []
            for c in items:
                c = c.copy()
                model_conds = dict(c.get("model_conds", {}))
                for key, cond in model_conds.items():
                    if (isinstance(cond, comfy.conds.CONDNoiseShape) and cond.cond.dim() >= 4
                            and tuple(cond.cond.shape[-2:]) == self.latent_hw):
                        model_conds[key] = cond._copy_with(_slice_patch_major(cond.cond, boxes, self.batch))
                y = model_conds.get("y")
                if (self.embedder is not None and isinstance(y, comfy.conds.CONDRegular)
                        and y.cond.dim() == 2 and y.cond.shape[1] >= 1536):
                    model_conds["y"] = y._copy_with(self._crop_y(y.cond, boxes))
                c["model_conds"] = model_conds
                if c.get("control") is not None:
                    c["control"] = self._control_for_boxes(c["control"], boxes)
                new_items.append(c)
            out[name] = new_items
        return out


# --------------------------------------------------------------------------------------------- #
# The sampler
# --------------------------------------------------------------------------------------------- #


def signal_scales(model_sampling, sigmas: torch.Tensor) -> list[float]:
    """``α_k`` with ``noise_scaling(σ, n, z) = α·z + σ·n`` (refuses any other form)."""
    alphas = []
    for s in sigmas.tolist():
        sig = torch.tensor([float(s)], dtype=torch.float64)
        one, zero = torch.ones(1, 1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64)
        alpha = float(model_sampling.noise_scaling(sig, zero, one, False).reshape(-1)[0])
        beta = float(model_sampling.noise_scaling(sig, one, zero, False).reshape(-1)[0])
        if not math.isclose(beta, s, rel_tol=1e-4, abs_tol=1e-6):
            raise ValueError(
                f"Pixelsmith sampler: this model's noise scaling is not x = α·z + σ·n "
                f"(σ={s:.4g} gives noise weight {beta:.4g}); it is not supported.")
        alphas.append(alpha)
    return alphas


def auto_patch_batch(inner_model, device, latent_shape, patch_hw) -> int:
    """Patches per call that fit in ~70% of the free memory of ``device`` (CFG batch of 2)."""
    b, c = latent_shape[0], latent_shape[1]
    try:
        per_patch = inner_model.memory_required([2 * b, c, patch_hw[0], patch_hw[1]])
    except (AttributeError, TypeError, RuntimeError):
        per_patch = 0
    free = comfy.model_management.get_free_memory(device)
    if per_patch <= 0:
        return 1
    return int(max(1, min(MAX_AUTO_PATCH_BATCH, (0.7 * free) // per_patch)))


def _preview_latent(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    scale = PREVIEW_MAX_SIDE / max(h, w)
    if scale >= 1.0:
        return x
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(x.float(), size=size, mode="area")


class PixelsmithSampler(comfy.samplers.Sampler):
    """Custom SAMPLER running ``kernels.pixelsmith.sample_pixelsmith`` inside any guider."""

    def __init__(self, config: PixelsmithConfig):
        validate_config(config)
        self.config = config

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None,
               denoise_mask=None, disable_pbar=False):
        cfg = self.config
        if latent_image is None:
            raise ValueError("Pixelsmith sampler: needs the upscaled guidance latent as latent_image.")
        if denoise_mask is not None:
            raise ValueError("Pixelsmith sampler: a noise mask (inpainting) is not supported; "
                             "remove the latent's noise_mask.")
        if latent_image.dim() != 4:
            raise ValueError(f"Pixelsmith sampler: needs a spatial (B, C, H, W) latent, got "
                             f"{tuple(latent_image.shape)}")
        conds = getattr(model_wrap, "conds", None)
        if not isinstance(conds, dict):
            raise ValueError("Pixelsmith sampler: the guider exposes no processed conds "
                             "(use CFGGuider or a guider derived from it).")
        inner_model = model_wrap.inner_model
        model_sampling = inner_model.model_sampling
        device = noise.device
        B, C, H, W = latent_image.shape
        alphas = signal_scales(model_sampling, sigmas.detach().cpu())
        patch_hw = (min(cfg.patch_size, H), min(cfg.patch_size, W))

        state_bytes = latent_image.numel() * latent_image.element_size()
        on_cpu = cfg.state_device == "cpu" or (
            cfg.state_device == "auto" and device.type != "cpu" and state_bytes > AUTO_CPU_STATE_BYTES)
        if on_cpu and device.type != "cpu":
            pin = torch.cuda.is_available()
            z_up, n = latent_image.cpu(), noise.cpu()
            if pin:
                z_up, n = z_up.pin_memory(), n.pin_memory()
        else:
            z_up, n = latent_image, noise

        patch_batch = 1
        if cfg.mode == "fast":
            patch_batch = cfg.patch_batch or auto_patch_batch(inner_model, device, latent_image.shape, patch_hw)
        log.info("Pixelsmith: latent %dx%d (batch %d), patch %dx%d, mode %s, %d patches/call, "
                 "slider %d of %d steps, state on %s", W, H, B, patch_hw[1], patch_hw[0], cfg.mode,
                 patch_batch, cfg.slider, len(alphas) - 1, "cpu" if on_cpu else device)

        cond_builder = PatchConditioning(conds, inner_model, (H, W), B, cfg.crop_mode)
        model_extra = {k: v for k, v in extra_args.items() if k in ("model_options", "seed")}

        def denoise(y, sigma, boxes):
            saved = model_wrap.conds
            model_wrap.conds = cond_builder.for_boxes(boxes)
            try:
                return model_wrap(y, sigma, **model_extra)
            finally:
                model_wrap.conds = saved

        seed = extra_args.get("seed")
        generator = torch.Generator().manual_seed(int(seed) if seed is not None else 0)
        steps = len(alphas) - 1
        progress_state = {"last_preview": 0.0}
        # Console bar with ETA over the exact fraction of pixel-steps done (all patches × steps).
        bar = tqdm(total=steps, unit="step", desc="Pixelsmith", disable=disable_pbar,
                   bar_format="{l_bar}{bar}| {n:.2f}/{total} [{elapsed}<{remaining}]")

        def on_progress(info):
            bar.update(info["progress"] * steps - bar.n)
            if callback is None:
                return
            now = time.monotonic()
            done = info["step"] >= steps
            if not done and now - progress_state["last_preview"] < 0.25:
                return
            progress_state["last_preview"] = now
            x = info["x"]
            preview = _preview_latent(x).to(device)
            unit = min(int(info["progress"] * PROGRESS_UNITS), PROGRESS_UNITS) - 1
            callback(max(unit, 0), preview, preview, PROGRESS_UNITS)

        try:
            out = pixelsmith.sample_pixelsmith(
                denoise, z_up, n, sigmas.detach().cpu(), cfg.slider, generator=generator,
                patch_size=cfg.patch_size, band=cfg.band, mode=cfg.mode, patch_batch=patch_batch,
                callback=on_progress, should_stop=comfy.model_management.throw_exception_if_processing_interrupted,
                device=device, signal_scales=alphas)
        finally:
            bar.close()
        out = model_sampling.inverse_noise_scaling(sigmas[-1].to(out.device), out)
        if callback is not None and H * W <= FINAL_X0_MAX_PIXELS:
            # the last callback's x0 becomes SamplerCustomAdvanced's denoised_output
            final = out.to(device)
            callback(PROGRESS_UNITS - 1, final, final, PROGRESS_UNITS)
        return out.to(device) if not on_cpu else out


# --------------------------------------------------------------------------------------------- #
# Node
# --------------------------------------------------------------------------------------------- #


def sampler_inputs(default_slider: int = 20) -> list:
    """Inputs shared by the SAMPLER node and the convenience upscale node."""
    return [
        io.Int.Input("slider", default=default_slider, min=0, max=1000,
                     tooltip="Pixelsmith Slider S: number of guided steps (phase fusion on steps 0..S-1, "
                             "chessboard on 0..S-2). More = closer to the upscaled input, fewer = more new "
                             "detail and more risk of repetition. Paper: 20 for ×2, 30 for ×4 (of 50). "
                             "Safe range 10-40; 0 = no guidance."),
        io.Int.Input("patch_size", default=128, min=8, max=1024, step=8,
                     tooltip="Patch side P in latent px (official 128 = 1024 px on SDXL). Use the model's "
                             "native training size; smaller latents are clamped to their own size."),
        io.Int.Input("band", default=10, min=0, max=128,
                     tooltip="Half-width of the 50/50 averaging band at patch borders, latent px "
                             "(official 10). 0 disables the averaging; keep below patch_size/2."),
        io.Combo.Input("mode", options=list(MODES), default="faithful",
                       tooltip="faithful: one random patch per model call, the official order. fast: "
                               "several non-overlapping patches at the same step per call (same guidance, "
                               "mask and band), about 2x faster on big latents; results differ in detail."),
        io.Int.Input("patch_batch", default=0, min=0, max=256,
                     tooltip="Patches per model call in fast mode. 0 = auto (sized from the free memory of "
                             "the model's device). Ignored in faithful mode."),
        io.Combo.Input("crop_conditioning", options=list(CROP_MODES), default="fixed",
                       tooltip="SDXL micro-conditioning per patch (spec §1.8; ignored on models without it): "
                               "fixed = crop (top, left) of the patch in image px; official = (left, left) "
                               "as the official code (bug reproduced); zero = keep the conditioning's crop (0)."),
        io.Combo.Input("state_device", options=list(STATE_DEVICES), default="auto",
                       tooltip="Where the full-size latent, snapshot, noise and step map live. auto = CPU RAM "
                               "once a latent tensor is over 256 MiB (gigapixel), else the model's device; "
                               "cpu = always RAM (only patches move to the device)."),
    ]


def build_config(slider, patch_size, band, mode, patch_batch, crop_conditioning, state_device) -> PixelsmithConfig:
    config = PixelsmithConfig(int(slider), int(patch_size), int(band), str(mode), int(patch_batch),
                              str(crop_conditioning), str(state_device))
    validate_config(config)
    return config


class PixelsmithSamplerNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="UltraRes_PixelsmithSampler",
            display_name="Pixelsmith Sampler (Slider, patch denoising)",
            category="UltraRes/Pixelsmith",
            description=(
                "Pixelsmith (Tragakis et al., 2024) as a SAMPLER for SamplerCustomAdvanced: denoises "
                "the upscaled latent patch by patch at the model's native size, starting from the noised "
                "upscaled image and guiding the first S steps (the Slider) with its phase (FFT fusion) "
                "and a chessboard of its pixels. Feed it the upscaled guidance latent as latent_image, "
                "any guider (CFGGuider, cfg 7.5) and BasicScheduler ddim_uniform 50 steps (the official "
                "DDIM schedule). Works with any image model with a spatial latent (SD1.5, SDXL with "
                "per-patch crop conditioning, SD3, Flux-class). Cost: about 2x a tiling of the image "
                "in patch calls per step (faithful); fast mode batches patches. Memory is constant in "
                "the image size on the device. For huge latents SamplerCustomAdvanced's "
                "denoised_output is only a preview-size latent: use output."),
            inputs=sampler_inputs(),
            outputs=[io.Sampler.Output(tooltip="The Pixelsmith SAMPLER; connect to SamplerCustomAdvanced.")],
        )

    @classmethod
    def execute(cls, slider, patch_size, band, mode, patch_batch, crop_conditioning, state_device) -> io.NodeOutput:
        config = build_config(slider, patch_size, band, mode, patch_batch, crop_conditioning, state_device)
        return io.NodeOutput(PixelsmithSampler(config))


NODES = (PixelsmithSamplerNode,)
