"""Input checks shared by every node: numbers, model/VAE/latent families, RAM, file names.

Each check runs before any work starts and raises ``ValueError`` with a message that starts with
the name of the input at fault and says what to do, so that a wrong wire or an API call with a bad
value never ends in a shape error from deep inside torch or in a silently blank image.
"""
from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

import psutil
from comfy_api.latest import io

if TYPE_CHECKING:
    import torch
    from comfy.model_patcher import ModelPatcher
    from comfy.sd import VAE


def check_numbers(node: type[io.ComfyNode], values: dict[str, Any]) -> None:
    """Every INT / FLOAT input of ``node``'s schema found in ``values``: finite and within its min/max.

    ComfyUI's prompt validation compares widget values with ``min``/``max``, which lets NaN through
    (every comparison with NaN is false) and does not see values that arrive over a link. Call it
    first thing in ``execute`` with ``locals()``.
    """
    for spec in node.define_schema().inputs:
        if not isinstance(spec, (io.Int.Input, io.Float.Input)) or values.get(spec.id) is None:
            continue
        value = values[spec.id]
        lo, hi = spec.min, spec.max
        bounds = f"between {lo} and {hi}" if lo is not None and hi is not None else "a finite number"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{spec.id}: expected a number {bounds}, got {value!r}.")
        if not math.isfinite(value):
            raise ValueError(f"{spec.id}: {value} is not a finite number; give a value {bounds}.")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ValueError(f"{spec.id}: {value} is outside the allowed range; give a value {bounds}.")


def model_latent_channels(model: ModelPatcher) -> int:
    """Latent channels the diffusion model works on (its latent format)."""
    return int(model.model.latent_format.latent_channels)


def check_vae_matches_model(model: ModelPatcher, vae: VAE) -> None:
    """Refuse a VAE from another model family (its latents have another channel count)."""
    want, got = model_latent_channels(model), int(vae.latent_channels)
    if want != got:
        raise ValueError(
            f"vae: this VAE makes {got}-channel latents but the model works on {want}-channel latents; "
            f"they belong to different model families. Connect the VAE that belongs to the model "
            f"(e.g. from the same checkpoint loader).")


def check_latent_matches_vae(samples: torch.Tensor, vae: VAE, name: str) -> None:
    """Refuse a latent the VAE cannot decode as one picture: not (B, C, H, W) (or, for a video VAE
    such as Qwen-Image's, a single frame (B, C, 1, H, W)), or C ≠ the VAE's latent channels."""
    frame = samples.dim() == 5 and samples.shape[2] == 1 and getattr(vae, "latent_dim", 2) == 3
    if (samples.dim() != 4 and not frame) or getattr(samples, "is_nested", False):
        raise ValueError(f"{name}: expected an image latent (B, C, H, W), got shape {tuple(samples.shape)}; "
                         f"video and audio latents are not supported here.")
    want = int(vae.latent_channels)
    if samples.shape[1] != want:
        raise ValueError(
            f"{name}: the latent has {samples.shape[1]} channels but this VAE decodes {want}-channel latents. "
            f"Connect the VAE of the model that made the latent.")


def format_bytes(n: float) -> str:
    """``1536`` → ``'1.5 KiB'``: bytes with a binary unit, three significant figures."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def check_ram(what: str, need: int, advice: str) -> None:
    """Refuse before allocating when ``need`` bytes exceed the RAM available now."""
    available = psutil.virtual_memory().available
    if need > available:
        raise ValueError(f"{what} needs about {format_bytes(need)} of RAM, {format_bytes(available)} "
                         f"available. {advice}")


def check_filename_prefix(prefix: str, name: str = "filename_prefix") -> None:
    """Refuse a prefix that would write hidden or nameless files (empty, ``.``, ``..``, ``.name``).

    ComfyUI's ``get_save_image_path`` names files after ``basename(normpath(prefix))``, which is
    ``.`` for an empty prefix.
    """
    base = os.path.basename(os.path.normpath(prefix.strip()))
    if not base or base.startswith("."):
        raise ValueError(f"{name}: {prefix!r} gives no file name (files would be hidden, like '._00001_.png'); "
                         f"give a name such as 'UltraRes/pixelsmith'.")
