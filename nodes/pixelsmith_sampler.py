"""Pixelsmith (Tragakis et al., NeurIPS 2024) as a ComfyUI SAMPLER: guided patch denoising with the Slider.

The loop itself is ``kernels/pixelsmith.py`` (after the official pipeline,
Thanos-DB/Pixelsmith@28c992b ``pixelsmith_pipeline.py:1716-1948``); the per-patch conditioning is
``nodes/pixelsmith_conditioning.py``.

How it plugs into ComfyUI
-------------------------
:class:`PixelsmithSampler` subclasses ``comfy.samplers.Sampler``. A guider (``CFGGuider`` or any
subclass: DualCFG, PerpNeg, ...) calls ``sample(model_wrap=guider, sigmas, extra_args, callback,
noise, latent_image)`` with the upscaled guidance latent ``z_up`` as ``latent_image`` (already
``process_latent_in``-scaled) and the node's noise. The kernel runs in the model's own
parameterisation, ``x = α(σ)·z + σ·n``, with ``α`` read from ``model_sampling.noise_scaling``
(``α = 1``: ε/v-prediction k-space, where the official DDIM step is ComfyUI's Euler step;
``α = 1 - σ``: rectified flow, SD3/Flux). Per patch batch the denoiser calls the guider itself,
``model_wrap(y, σ, model_options, seed)``, so every guider, model patch and wrapper keeps working.

It is a ``Sampler`` of its own rather than a ``KSAMPLER`` function because it needs the guider
(to hand it per-patch conds), not ComfyUI's inpainting wrapper, and reports progress in
fractions of a step (one step of a gigapixel image is thousands of patch calls).

Memory: with ``state_device`` = cpu (or auto on big latents) ``x``, ``x_prev``, ``τ``, ``z_up`` and
the noise live in CPU RAM (pinned when CUDA is present) and only patches go to the model's device.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import comfy.model_base
import comfy.model_management
import comfy.samplers
import torch
import torch.nn.functional as F
from comfy_api.latest import io
from tqdm.auto import tqdm

from ..kernels import pixelsmith
from ._checks import check_numbers
from ._schema import advanced
from ._stage import model_latent_px
from .pixelsmith_conditioning import PatchConditioning
from .pixelsmith_positions import POSITIONS, token_side, with_patch_position

if TYPE_CHECKING:
    from comfy.model_sampling import ModelSamplingDiscrete

log = logging.getLogger(__name__)

MODES = ("faithful", "fast")
CROP_MODES = ("fixed", "official", "zero")
STATE_DEVICES = ("auto", "device", "cpu")
# auto: keep the full-size state in CPU RAM once one latent-size tensor exceeds this.
AUTO_CPU_STATE_BYTES = 256 << 20
PROGRESS_UNITS = 1000  # ProgressBar resolution over the whole job (all patches × steps)
PREVIEW_MAX_SIDE = 128  # latent px of the live preview handed to the callback
FINAL_X0_MAX_PIXELS = 512 * 512  # latent px: larger results are not handed whole to the callback
MIN_PATCH_CELLS = 8  # latent cells a patch side must have
MAX_AUTO_PATCH_BATCH = 64


@dataclasses.dataclass(frozen=True)
class PixelsmithConfig:
    slider: int               # S, guided steps; -1 = auto (the paper's share of the steps)
    patch_size: int           # P, image px (converted to latent cells per model: :meth:`cells`)
    band: int                 # averaging band half-width, image px
    mode: str                 # faithful | fast
    patch_batch: int          # patches per model call in fast mode; 0 = auto
    crop_mode: str            # fixed | official | zero (SDXL only)
    state_device: str         # auto | device | cpu
    positions: str = "local"  # local | global (DiT rotary positions per patch)

    def __post_init__(self) -> None:
        validate_config(self)

    def cells(self, latent_px: int) -> tuple[int, int]:
        """``(patch, band)`` in latent cells of a model with ``latent_px`` image px per cell (8 for SD/SDXL,
        SD3, Flux.1, Qwen-Image, Z-Image; 16 for Flux.2's packed cells). The band is rounded down."""
        if self.patch_size % latent_px or self.patch_size // latent_px < MIN_PATCH_CELLS:
            raise ValueError(
                f"patch_size: {self.patch_size} px must be a whole number of this model's {latent_px} px latent "
                f"cells and at least {MIN_PATCH_CELLS} of them ({MIN_PATCH_CELLS * latent_px} px); use its native "
                f"size, e.g. {round(self.patch_size / latent_px) * latent_px or MIN_PATCH_CELLS * latent_px} px.")
        return self.patch_size // latent_px, self.band // latent_px


def validate_config(config: PixelsmithConfig) -> None:
    """Clear errors that name the offending input (run once, when a config is made)."""
    if config.slider < pixelsmith.AUTO_SLIDER:
        raise ValueError(f"slider must be >= 0 (guided steps) or -1 (auto), got {config.slider}")
    if config.patch_size < MIN_PATCH_CELLS * 8:
        raise ValueError(f"patch_size must be >= {MIN_PATCH_CELLS * 8} px, got {config.patch_size}")
    check_band(config.band, config.patch_size)
    if config.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {config.mode!r}")
    if config.patch_batch < 0:
        raise ValueError(f"patch_batch must be >= 0 (0 = auto), got {config.patch_batch}")
    if config.crop_mode not in CROP_MODES:
        raise ValueError(f"crop_conditioning must be one of {CROP_MODES}, got {config.crop_mode!r}")
    if config.state_device not in STATE_DEVICES:
        raise ValueError(f"state_device must be one of {STATE_DEVICES}, got {config.state_device!r}")
    if config.positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}, got {config.positions!r}")


def check_band(band: int, patch_side: int, clamped: str = "", unit: int = 1) -> None:
    """The averaging band must stay below half the patch side, so opposite borders never meet; both are in
    units of ``unit`` image px (1: px as the user set them; the latent cell when the patch is clamped)."""
    if band < 0 or 2 * band >= patch_side:
        raise ValueError(f"band: {band * unit} px must be at least 0 and below half the patch side "
                         f"({patch_side * unit} px{clamped}), i.e. at most {max(0, (patch_side - 1) // 2) * unit} px.")


# --------------------------------------------------------------------------------------------- #
# The sampler
# --------------------------------------------------------------------------------------------- #


def signal_scales(model_sampling: ModelSamplingDiscrete, sigmas: torch.Tensor) -> list[float]:
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


def auto_patch_batch(inner_model: comfy.model_base.BaseModel, device: torch.device,
                     latent_shape: torch.Size, patch_hw: tuple[int, int]) -> int:
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


def staged_state(state_device: str, latent_image: torch.Tensor,
                 noise: torch.Tensor) -> tuple[bool, torch.Tensor, torch.Tensor]:
    """``(on_cpu, z_up, n)``: where the full-size state lives, and ``z_up``/``n`` moved there.

    ``cpu``, or ``auto`` above ``AUTO_CPU_STATE_BYTES`` per latent, keeps them in CPU RAM (pinned
    when CUDA is present, for fast patch copies); otherwise they stay on the model's device.
    """
    device = noise.device
    state_bytes = latent_image.numel() * latent_image.element_size()
    on_cpu = state_device == "cpu" or (
        state_device == "auto" and device.type != "cpu" and state_bytes > AUTO_CPU_STATE_BYTES)
    if not (on_cpu and device.type != "cpu"):
        return on_cpu, latent_image, noise
    z_up, n = latent_image.cpu(), noise.cpu()
    if torch.cuda.is_available():
        z_up, n = z_up.pin_memory(), n.pin_memory()
    return on_cpu, z_up, n


def _preview_latent(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    scale = PREVIEW_MAX_SIDE / max(h, w)
    if scale >= 1.0:
        return x
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(x.float(), size=size, mode="area")


class PatchProgress:
    """Turns the kernel's callback dicts into ComfyUI progress over ``PROGRESS_UNITS`` units.

    A console bar with ETA over the exact fraction of pixel-steps done (all patches × steps), and
    the sampler ``callback`` with a small preview latent at most every 0.25 s; :meth:`finish`
    hands over the final latent (SamplerCustomAdvanced's ``denoised_output``) when it is small.
    """

    def __init__(self, callback: Callable | None, steps: int, device: torch.device, disable: bool,
                 frame: bool = False):
        self.callback, self.steps, self.device = callback, steps, device
        self.frame = frame  # previews get the frame axis of a single-frame video latent back
        self.last_preview = 0.0
        self.bar = tqdm(total=steps, unit="step", desc="Pixelsmith", disable=disable,
                        bar_format="{l_bar}{bar}| {n:.2f}/{total} [{elapsed}<{remaining}]")

    def __call__(self, info: dict) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        self.bar.update(info["progress"] * self.steps - self.bar.n)
        if self.callback is None:
            return
        now = time.monotonic()
        if info["progress"] < 1.0 and now - self.last_preview < 0.25:
            return
        self.last_preview = now
        preview = _preview_latent(info["x"]).to(self.device)
        if self.frame:
            preview = preview.unsqueeze(2)
        unit = min(int(info["progress"] * PROGRESS_UNITS), PROGRESS_UNITS) - 1
        self.callback(max(unit, 0), preview, preview, PROGRESS_UNITS)

    def finish(self, out: torch.Tensor) -> None:
        if self.callback is not None and out.shape[-2] * out.shape[-1] <= FINAL_X0_MAX_PIXELS:
            final = out.to(self.device)
            self.callback(PROGRESS_UNITS - 1, final, final, PROGRESS_UNITS)

    def close(self) -> None:
        self.bar.close()


class PixelsmithSampler(comfy.samplers.Sampler):
    """Custom SAMPLER running ``kernels.pixelsmith.sample_pixelsmith`` inside any guider."""

    def __init__(self, config: PixelsmithConfig):
        self.config = config

    @staticmethod
    def _check(model_wrap: comfy.samplers.CFGGuider, latent_image: torch.Tensor | None,
               denoise_mask: torch.Tensor | None) -> None:
        if latent_image is None:
            raise ValueError("Pixelsmith sampler: needs the upscaled guidance latent as latent_image.")
        if denoise_mask is not None:
            raise ValueError("Pixelsmith sampler: a noise mask (inpainting) is not supported; "
                             "remove the latent's noise_mask.")
        if latent_image.dim() != 4 and not (latent_image.dim() == 5 and latent_image.shape[2] == 1):
            raise ValueError(f"Pixelsmith sampler: needs a spatial (B, C, H, W) latent (or a single-frame "
                             f"(B, C, 1, H, W) one), got {tuple(latent_image.shape)}")
        channels = model_wrap.inner_model.latent_format.latent_channels
        if latent_image.shape[1] != channels:
            raise ValueError(f"latent_image: the latent has {latent_image.shape[1]} channels, the model works on "
                             f"{channels}; encode the image with the VAE that belongs to the model.")
        if not isinstance(getattr(model_wrap, "conds", None), dict):
            raise ValueError("Pixelsmith sampler: the guider exposes no processed conds "
                             "(use CFGGuider or a guider derived from it).")

    def sample(self, model_wrap: comfy.samplers.CFGGuider, sigmas: torch.Tensor, extra_args: dict,
               callback: Callable | None, noise: torch.Tensor, latent_image: torch.Tensor | None = None,
               denoise_mask: torch.Tensor | None = None, disable_pbar: bool = False) -> torch.Tensor:
        config = self.config
        self._check(model_wrap, latent_image, denoise_mask)
        # Qwen-Image's latent format is a video one: a picture is one frame, (B, C, 1, H, W). The patch
        # loop runs on (B, C, H, W); the frame axis is put back for every model call and the result.
        frame = latent_image.dim() == 5
        if frame:
            latent_image, noise = latent_image[:, :, 0], noise[:, :, 0]
        inner_model = model_wrap.inner_model
        device = noise.device
        B, C, H, W = latent_image.shape
        sigmas_cpu = sigmas.detach().cpu()
        alphas = signal_scales(inner_model.model_sampling, sigmas_cpu)
        px = model_latent_px(inner_model)
        patch, band = config.cells(px)
        patch_hw = (min(patch, H), min(patch, W))
        if min(patch_hw) < patch:
            check_band(band, min(patch_hw), f": patch_size {config.patch_size} is clamped to the {W * px}x{H * px} "
                                            "picture", unit=px)
        on_cpu, z_up, n = staged_state(config.state_device, latent_image, noise)
        slider = config.slider
        if slider == pixelsmith.AUTO_SLIDER:
            slider = pixelsmith.auto_slider(len(alphas) - 1, (H, W), patch)
        patch_batch = 1
        if config.mode == "fast":
            patch_batch = config.patch_batch or auto_patch_batch(inner_model, device, latent_image.shape, patch_hw)
        log.info("Pixelsmith: latent %dx%d (batch %d), patch %dx%d, mode %s, %d patches/call, "
                 "slider %d of %d steps, state on %s", W, H, B, patch_hw[1], patch_hw[0], config.mode,
                 patch_batch, slider, len(alphas) - 1, "cpu" if on_cpu else device)

        cond_builder = PatchConditioning(model_wrap.conds, inner_model, (H, W), B, config.crop_mode)
        token = token_side(inner_model, config.positions)

        def denoise(y: torch.Tensor, sigma: torch.Tensor, boxes: list, **model_extra) -> torch.Tensor:
            if token is not None and len(boxes) > 1:  # one RoPE shift per call: one patch per call
                return torch.cat([denoise(y[i * B:(i + 1) * B], sigma[i * B:(i + 1) * B], [box], **model_extra)
                                  for i, box in enumerate(boxes)])
            if token is not None:
                model_extra["model_options"] = with_patch_position(model_extra.get("model_options", {}), boxes[0],
                                                                   token)
            saved = model_wrap.conds
            model_wrap.conds = cond_builder.for_boxes(boxes)
            try:
                if frame:
                    return model_wrap(y.unsqueeze(2), sigma, **model_extra)[:, :, 0]
                return model_wrap(y, sigma, **model_extra)
            finally:
                model_wrap.conds = saved

        seed = extra_args.get("seed")
        generator = torch.Generator().manual_seed(int(seed) if seed is not None else 0)
        progress = PatchProgress(callback, len(alphas) - 1, device, disable_pbar, frame)
        try:
            out = pixelsmith.sample_pixelsmith(
                denoise, pixelsmith.start_latent(z_up, n, float(sigmas_cpu[0]), alphas[0]), sigmas_cpu,
                {k: v for k, v in extra_args.items() if k in ("model_options", "seed")}, progress,
                z_up=z_up, noise=n, slider=slider, generator=generator, patch_size=patch,
                band=band, mode=config.mode, patch_batch=patch_batch, device=device, signal_scales=alphas)
        finally:
            progress.close()
        out = inner_model.model_sampling.inverse_noise_scaling(sigmas[-1].to(out.device), out)
        if frame:
            out = out.unsqueeze(2)
        progress.finish(out)
        return out.to(device) if not on_cpu else out


# --------------------------------------------------------------------------------------------- #
# Node
# --------------------------------------------------------------------------------------------- #


def sampler_inputs() -> list:
    """Inputs shared by the SAMPLER node and the convenience upscale node."""
    return [
        io.Int.Input("slider", default=pixelsmith.AUTO_SLIDER, min=pixelsmith.AUTO_SLIDER, max=1000,
                     tooltip="Higher = closer to your image, lower = more new detail and more risk of repeated "
                             "objects; leave at -1 (auto) to start. Pixelsmith Slider S: number of guided steps "
                             "(phase fusion on steps 0..S-1, chessboard on 0..S-2). -1 = the paper's share of the "
                             "steps: 40 % while the image is at most 2× the patch side (20 of 50 for SDXL 2048²), "
                             "60 % beyond (30 of 50 for 4096²). 0 = no guidance. Small or distilled models may "
                             "need more (80-90 % of the steps) when objects repeat."),
        io.Int.Input("patch_size", default=1024, min=MIN_PATCH_CELLS * 8, max=8192, step=8,
                     tooltip="Set it to your model's native size in image px: 1024 for SDXL, Flux.1, Flux.2, SD3 "
                             "and Z-Image, 1328 for Qwen-Image, 512 for SD1.5. Patch side P in image px (official "
                             "1024 on SDXL = 128 latent cells); it must be a whole number of the model's latent "
                             "cells (8 px, 16 on Flux.2). Smaller pictures are clamped to their own size."),
        io.Int.Input("band", default=80, min=0, max=4096, step=8,
                     tooltip="Wider = patch borders blend more smoothly; try 80, 0 turns the blending off. "
                             "Half-width of the 50/50 averaging band at patch borders, in image px (official 10 "
                             "latent cells = 80 px on SDXL; rounded down to whole cells); must be below half the "
                             "patch side (the patch is clamped to the picture on small images).",
                     **advanced()),
        io.Combo.Input("mode", options=list(MODES), default="faithful",
                       tooltip="faithful gives the paper's result, fast is quicker on big images; try faithful. "
                               "faithful: one random patch per model call, the official order. fast: each step covered by a grid of windows shifted "
                               "at random every step, several disjoint windows per call (same guidance, mask "
                               "and band), about 2x faster on big latents; results differ in detail."),
        io.Int.Input("patch_batch", default=0, min=0, max=256,
                     tooltip="Leave at 0 (auto); set a small number if fast mode runs out of GPU memory. "
                             "Patches per model call in fast mode; 0 = auto (sized from the free memory of the "
                             "model's device). Ignored in faithful mode.",
                     **advanced()),
        io.Combo.Input("crop_conditioning", options=list(CROP_MODES), default="fixed",
                       tooltip="Tells SDXL where each patch sits in the picture; leave on fixed. SDXL "
                               "micro-conditioning per patch (ignored on models without it): fixed = crop "
                               "(top, left) of the patch in image px; official = (left, left), the value the "
                               "official code passes (the left offset twice), to match its results; zero = keep "
                               "the conditioning's crop (0).",
                       **advanced()),
        io.Combo.Input("state_device", options=list(STATE_DEVICES), default="auto",
                       tooltip="Leave on auto; pick cpu if the GPU runs out of memory on huge images. Where the "
                               "full-size latent, snapshot, noise and step map live: auto = CPU RAM once a latent "
                               "tensor is over 256 MiB (gigapixel), else the model's device; device = always the "
                               "model's device; cpu = always RAM (only patches move to the device).",
                       **advanced()),
    ]


def positions_input() -> io.Combo.Input:
    """The ``positions`` input: last on both Pixelsmith nodes and optional, so saved workflows and API
    prompts made before it keep working (missing = local)."""
    return io.Combo.Input(
        "positions", options=list(POSITIONS), default="local",
        tooltip="Only for DiT models with rotary positions (Flux, Flux.2, Z-Image); leave on local. What each "
                "patch's image tokens believe about where they are: local = every patch is a whole picture "
                "at the model's native size (the positions it was trained on); global = each patch's tokens "
                "carry their place in the full image (positions past the native range; one model call per "
                "patch). UNets (SD1.5, SDXL) have no positions and accept local only.",
        optional=True, **advanced())


def build_config(slider: int, patch_size: int, band: int, mode: str, patch_batch: int, crop_conditioning: str,
                 state_device: str, positions: str = "local") -> PixelsmithConfig:
    """The validated config from the node inputs shared by the sampler and upscale nodes."""
    return PixelsmithConfig(int(slider), int(patch_size), int(band), str(mode), int(patch_batch),
                            str(crop_conditioning), str(state_device), str(positions))


class PixelsmithSamplerNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="UltraRes_PixelsmithSampler",
            display_name="Pixelsmith Sampler (Slider, patch denoising)",
            category="UltraRes/Pixelsmith",
            description=(
                "Re-draws an upscaled image with full detail, patch by patch, without repeated objects; "
                "leave slider at -1 (auto: the paper's 20 of 50 steps for a ×2 stage, 30 for ×4). Pixelsmith (Tragakis et al., 2024) as a "
                "SAMPLER for SamplerCustomAdvanced: denoises the upscaled latent patch by patch at the model's native size, starting from the noised "
                "upscaled image and guiding the first S steps (the Slider) with its phase (FFT fusion) "
                "and a chessboard of its pixels. Feed it the upscaled guidance latent as latent_image, "
                "any guider (CFGGuider, cfg 7.5) and BasicScheduler ddim_uniform 50 steps (the DDIM "
                "schedule of the official code, Thanos-DB/Pixelsmith). Works with any image model with a "
                "spatial latent (SD1.5, SDXL with "
                "per-patch crop conditioning, SD3, Flux.1, Flux.2, Qwen-Image, Z-Image; positions picks DiT "
                "rotary positions per patch). Cost: about 2x a tiling of the image "
                "in patch calls per step (faithful); fast mode batches patches. Memory is constant in "
                "the image size on the device. For huge latents SamplerCustomAdvanced's "
                "denoised_output is only a preview-size latent: use output."),
            inputs=[*sampler_inputs(), positions_input()],
            outputs=[io.Sampler.Output(tooltip="Connect to SamplerCustomAdvanced's sampler, with the upscaled latent "
                                               "as its latent_image. The Pixelsmith SAMPLER.")],
        )

    @classmethod
    def execute(cls, slider: int, patch_size: int, band: int, mode: str, patch_batch: int, crop_conditioning: str,
                state_device: str, positions: str = "local") -> io.NodeOutput:
        check_numbers(cls, locals())
        config = build_config(slider, patch_size, band, mode, patch_batch, crop_conditioning, state_device,
                              positions)
        return io.NodeOutput(PixelsmithSampler(config))


NODES = (PixelsmithSamplerNode,)
