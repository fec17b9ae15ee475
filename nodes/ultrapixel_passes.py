"""UltraPixel sampling passes on ComfyUI: shift, the official sigma grid, noises, the LR pass.

UltraPixel (Ren et al., 2024, arXiv:2407.02158), Sec. 3 and Fig. 3. The settings are those of the
official code (catcathh/UltraPixel@e85d3bc ``inference/test_t2i.py:113-125`` and the sampler in
``gdf/__init__.py``): DDPM on ``t = linspace(1, 0, steps + 1)`` at shift 1, CFG with the cfg_rho
rescale, initial noises drawn HR first then LR, the x0 of the last step as output
(``inference/utils.py:124-126``). Shared by the LR Guidance node and the all-in-one Stage C node,
together with their common inputs (:func:`sampling_inputs`).
"""
from __future__ import annotations

import types
from typing import TYPE_CHECKING, Any

import comfy.model_management
import comfy.model_sampling
import comfy.sample
import comfy.samplers
import torch
from comfy_api.latest import io

from ..kernels.ultrapixel import lr_pixel_size, stage_c_latent_size
from ..kernels.ultrapixel_sampling import time_grid
from ._schema import advanced
from ._stage import StageProgress
from .ultrapixel_patch import LRFeatures, capture_clone, features_from_capture, rescale_cfg_function

if TYPE_CHECKING:
    from comfy.model_patcher import ModelPatcher

MIN_RES = 64  # tests and previews; UltraPixel targets 2048 px and above
MAX_RES = 16384
LR_SIZE = 1024  # the LR picture of a square target: stage C's native size (official inference/utils.py:28-38)


class ModelSamplingUltraPixel(comfy.model_sampling.StableCascadeSampling, comfy.model_sampling.EPS):
    """Stable Cascade sampling (EPS prediction) at a given shift, as ModelSamplingStableCascade builds it."""


def with_shift(model: ModelPatcher, shift: float) -> ModelPatcher:
    """The model with StableCascadeSampling at ``shift`` (as the stock ModelSamplingStableCascade does).

    Returns ``model`` itself when it already samples with that shift; otherwise a clone.
    """
    current = model.get_model_object("model_sampling")
    if isinstance(current, comfy.model_sampling.StableCascadeSampling) and abs(float(current.shift) - shift) < 1e-9:
        return model
    # Built directly at ``shift`` (its sigma table takes 10k evaluations; build it once).
    sampling = ModelSamplingUltraPixel(types.SimpleNamespace(sampling_settings={"shift": float(shift)}))
    clone = model.clone()
    clone.add_object_patch("model_sampling", sampling)
    return clone


def official_sigmas(model: ModelPatcher, steps: int) -> torch.Tensor:
    """sigma(t_i) for ``t = linspace(1, 0, steps + 1)``, last one 0 (the last step returns x0)."""
    sampling = model.get_model_object("model_sampling")
    t = time_grid(steps)[:-1].float()
    return torch.cat([sampling.sigma(t).float().reshape(-1), torch.zeros(1)])


def pass_noise(seed: int, hr_shape: tuple[int, ...], lr_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial noises from one seeded generator, HR first then LR, as the official script draws them."""
    gen = torch.Generator().manual_seed(int(seed))
    hr = torch.randn(hr_shape, generator=gen)
    lr = torch.randn(lr_shape, generator=gen)
    return hr, lr


def sample_pass(model: ModelPatcher, noise: torch.Tensor, positive: Any, negative: Any, cfg: float,
                sigmas: torch.Tensor, latent: torch.Tensor, seed: int, progress: StageProgress | None,
                label: str | None = None) -> torch.Tensor:
    """One DDPM pass of ComfyUI's ``sample_custom`` on ``sigmas``; returns the x0 of the last step."""
    comfy.model_management.throw_exception_if_processing_interrupted()
    return comfy.sample.sample_custom(model, noise, cfg, comfy.samplers.sampler_object("ddpm"), sigmas,
                                      positive, negative, latent,
                                      callback=progress.callback(label) if progress else None,
                                      disable_pbar=True, seed=int(seed))


def stage_b_latent(batch: int, width: int, height: int) -> torch.Tensor:
    """Empty stage-B latent ``(B, 4, ceil(H/4), ceil(W/4))`` (stage A upsamples 4x; ``inference/utils.py:28-38``)."""
    return torch.zeros(batch, 4, -(-height // 4), -(-width // 4))


def lr_latent_size(width: int, height: int, lr_size: int = LR_SIZE) -> tuple[int, int]:
    """Stage-C latent (h, w) of the LR pass: UltraPixel's LR pixel size for the target's aspect ratio,
    with ``lr_size`` px the side of a square target's LR picture (1024 for Stable Cascade)."""
    return stage_c_latent_size(*lr_pixel_size(height, width, lr_size // 32))


def validate_size(width: int, height: int, lr_size: int = LR_SIZE) -> None:
    """ValueError naming width/height when out of range or too elongated for the LR position table."""
    for name, v in (("width", width), ("height", height)):
        if not MIN_RES <= v <= MAX_RES:
            raise ValueError(f"{name}: {v} px is outside {MIN_RES}..{MAX_RES}.")
    if lr_size % 32:
        raise ValueError(f"lr_size: {lr_size} px is not a multiple of 32 (UltraPixel's LR sizes are); try 1024.")
    lr_h, lr_w = lr_latent_size(width, height, lr_size)
    if lr_h * lr_w > 32 * 32 or min(lr_h, lr_w) < 1:
        raise ValueError(f"width/height: aspect ratio {width}:{height} is too extreme for UltraPixel "
                         f"(LR latent {lr_h}x{lr_w} exceeds the 32² position table).")


def lr_source(lr_latent: dict, lr_size: tuple[int, int]) -> torch.Tensor:
    """The given stage-C latent at the LR latent size (the position table holds at most 32^2 LR tokens)."""
    lr_samples = lr_latent["samples"].float()
    if tuple(lr_samples.shape[-2:]) != lr_size:
        lr_samples = torch.nn.functional.interpolate(lr_samples, size=lr_size, mode="bilinear", align_corners=False)
    return lr_samples


def lr_pass(model: ModelPatcher, positive: Any, negative: Any, width: int, height: int, batch: int, seed: int,
            steps: int, cfg: float, cfg_rescale: float, shift: float, lr_latent: dict | None = None,
            progress: StageProgress | None = None,
            lr_size: int = LR_SIZE) -> tuple[LRFeatures, torch.Tensor, torch.Tensor]:
    """Run the LR pass and capture the guidance. Returns (guidance, LR x0 latent, HR noise).

    Text-to-image: full ``steps``-step DDPM sampling at UltraPixel's LR size (Sec. 3; the official
    ``gdf/__init__.py:135-165``). With ``lr_latent`` (img2img): the latent is re-noised to the last
    LR step's sigma and one step is run, the training-time procedure (official
    ``train/train_t2i.py:414-432``), so the features describe that latent.
    """
    lr_c = lr_latent_size(width, height, lr_size)
    hr_c = stage_c_latent_size(height, width)
    lr_samples = None
    if lr_latent is not None:
        lr_samples = lr_source(lr_latent, lr_c)
        batch = lr_samples.shape[0]
    hr_noise, lr_noise = pass_noise(seed, (batch, 16, *hr_c), (batch, 16, *lr_c))
    sampled = with_shift(model, shift)
    clone, hook = capture_clone(sampled)
    if cfg_rescale > 0.0:
        clone.set_model_sampler_cfg_function(rescale_cfg_function(cfg_rescale))
    sigmas = official_sigmas(sampled, steps)
    if lr_samples is None:
        latent = torch.zeros_like(lr_noise)
    else:
        sigmas, latent = sigmas[-2:].clone(), lr_samples
        if progress is not None:  # one step instead of `steps`: count the skipped ones as done
            progress.advance(progress.done + steps - 1)
    x0 = sample_pass(clone, lr_noise, positive, negative, cfg, sigmas, latent, seed, progress, "LR pass")
    guidance = features_from_capture(hook, lr_c)
    del clone, hook
    return guidance, x0, hr_noise


# Inputs shared by the LR Guidance and Stage C nodes


def lr_size_input() -> io.Int.Input:
    """The LR pass's size (the last input of the LR Guidance and Stage C nodes, so saved workflows keep theirs)."""
    return io.Int.Input("lr_size", default=LR_SIZE, min=256, max=2048, step=32, optional=True,
                        tooltip="Leave at 1024 for Stable Cascade. The side in px of the low-resolution picture "
                                "(for a square target; other aspect ratios keep its area): the size your stage C "
                                "draws best at (1024 for the released model).",
                        **advanced())

SIZE_TIP = ("The {} of the final picture in px; try 2048. UltraPixel was trained up to 4096-6144 px; "
            "stage-C latent = ceil(px / 42.67), stage B/A decode to this size.")


def size_inputs() -> list[io.Int.Input]:
    """The target ``width`` / ``height`` inputs."""
    return [
        io.Int.Input("width", default=2048, min=MIN_RES, max=MAX_RES, step=8, tooltip=SIZE_TIP.format("width")),
        io.Int.Input("height", default=2048, min=MIN_RES, max=MAX_RES, step=8, tooltip=SIZE_TIP.format("height")),
    ]


def sampling_inputs() -> list:
    """Prompts, target size, seed, steps, CFG, CFG rescale and shift of an UltraPixel sampling node."""
    return [
        io.Conditioning.Input("positive", tooltip="Your prompt, from the Stable Cascade text encoder. Stable Cascade "
                                                  "text conditioning (CLIP bigG) for stage C."),
        io.Conditioning.Input("negative", tooltip="What to avoid; try leaving it empty. Negative conditioning. The "
                                                  "paper uses the empty prompt \"\"."),
        *size_inputs(),
        io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                     tooltip="Change it for another picture; keep it to reproduce a result. Seed of the initial "
                             "noises (HR then LR, one generator) and of the DDPM noise."),
        io.Int.Input("steps", default=20, min=1, max=200,
                     tooltip="More = slower and a little finer, fewer = faster and rougher; try 20. Stage-C steps "
                             "per pass (paper: 20, on the grid t = linspace(1, 0, steps+1))."),
        io.Float.Input("cfg", default=4.0, min=0.0, max=30.0, step=0.1, round=0.01,
                       tooltip="Higher = follows the prompt more strongly, with harsher contrast; try 4. "
                               "Classifier-free guidance scale (paper: 4). ComfyUI's Stable Cascade examples use 4 too."),
        io.Float.Input("cfg_rescale", default=0.7, min=0.0, max=1.0, step=0.01,
                       tooltip="Higher = tames the harsh, oversaturated look of strong CFG; try 0.7. "
                               "cfg_rho: blend of the std-rescaled CFG result (paper: 0.7; 0 = plain CFG).",
                       **advanced()),
        io.Float.Input("shift", default=1.0, min=0.1, max=10.0, step=0.01,
                       tooltip="Higher = more of the steps go to the overall composition, fewer to fine detail; try "
                               "1. Noise-schedule shift (paper: 1). ComfyUI's stage-C default is 2.",
                       **advanced()),
    ]
