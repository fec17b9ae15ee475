"""Glue shared by the all-in-one stage nodes: re-encoding, guider and schedule, progress.

Pixelsmith Upscale, FreeScale Upscale and UltraPixel Stage C each run one or more sampling passes
inside a single node. What they have in common lives here, so each node only says what is
particular to its method:

* :func:`decode` / :func:`encode` with a :class:`Tiling` (when to switch to ComfyUI's tiled VAE
  calls, with which tiles) and :func:`reencode` (decode → resize in pixel space → encode,
  optionally keeping the source latent's native-scale detail);
* :func:`cfg_guider` and :func:`leading_sigmas` (exactly N "leading" steps, the schedule both
  training-free papers use);
* :func:`latent_px` (image px per latent cell, from what ComfyUI knows of the model and VAE);
* :class:`StageProgress`: one ComfyUI progress bar with previews and one console bar with ETA
  over every pass of a node, checking for interruption at each step.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import torch
from tqdm.auto import tqdm

from ..kernels.detail import keep_latent_detail

if TYPE_CHECKING:
    from comfy.model_patcher import ModelPatcher
    from comfy.sd import VAE

SamplerCallback = Callable[[int, torch.Tensor, torch.Tensor, int], None]
"""ComfyUI's sampler callback ``(step, x0, x, total_steps)``."""


# --------------------------------------------------------------------------------------------- #
# Decode → resize → encode
# --------------------------------------------------------------------------------------------- #


@dataclasses.dataclass(frozen=True)
class Tiling:
    """When the VAE runs tile by tile, and with which tiles.

    ``*_above_px``: image px (height × width) above which the tiled call is used. ``*_tiles``:
    keyword arguments for ``VAE.decode_tiled`` / ``VAE.encode_tiled`` (empty = ComfyUI's defaults).
    """

    decode_above_px: int
    encode_above_px: int
    decode_tiles: dict[str, int] = dataclasses.field(default_factory=dict)
    encode_tiles: dict[str, int] = dataclasses.field(default_factory=dict)


def decode(vae: VAE, samples: torch.Tensor, tiling: Tiling) -> torch.Tensor:
    """LATENT samples → IMAGE ``(B, H, W, C)``, tiled above ``tiling.decode_above_px``.

    A single-frame video latent ``(B, C, 1, H, W)`` (Qwen-Image's Wan 2.1 VAE) gives B images.
    """
    ratio = vae.spacial_compression_decode()
    if samples.shape[-2] * samples.shape[-1] * ratio * ratio > tiling.decode_above_px:
        images = vae.decode_tiled(samples, **tiling.decode_tiles)
    else:
        images = vae.decode(samples)
    return images.reshape(-1, *images.shape[-3:])  # a video VAE's (B, T, H, W, C) → (B·T, H, W, C)


def encode(vae: VAE, pixels: torch.Tensor, tiling: Tiling) -> torch.Tensor:
    """IMAGE ``(B, H, W, 3)`` → LATENT samples, tiled above ``tiling.encode_above_px``.

    A video VAE (``latent_dim`` 3) would read the batch as the frames of one clip and compress
    them in time, so each picture is encoded on its own, as a single frame ``(1, C, 1, h, w)``.
    """
    if getattr(vae, "latent_dim", 2) == 3 and pixels.shape[0] > 1:
        return torch.cat([encode(vae, pixels[i:i + 1], tiling) for i in range(pixels.shape[0])])
    if pixels.shape[1] * pixels.shape[2] > tiling.encode_above_px:
        return vae.encode_tiled(pixels, **tiling.encode_tiles)
    return vae.encode(pixels)


def spatial(samples: torch.Tensor) -> torch.Tensor:
    """The ``(B, C, H, W)`` view of a picture latent, also of a single-frame ``(B, C, 1, H, W)``."""
    return samples[:, :, 0] if samples.dim() == 5 else samples


Resize = Callable[[torch.Tensor, tuple[int, int]], torch.Tensor]
"""``resize(image (B, H, W, 3), (H', W')) -> (B, H', W', 3)``."""


def reencode(vae: VAE, source: torch.Tensor, size: tuple[int, int], resize: Resize, tiling: Tiling,
             source_is_latent: bool = True, keep_detail: bool = False) -> torch.Tensor:
    """The image of ``source`` (LATENT samples, or an IMAGE) resized to ``size`` (H, W) px, encoded.

    ``keep_detail``: the low latent band comes from the source's own latent (an IMAGE source is
    encoded at its size for it), see :func:`kernels.detail.keep_latent_detail`. Intermediate
    images are dropped as soon as they are used, so a stage holds at most the source and the
    resized image in RAM at once.
    """
    image = decode(vae, source, tiling) if source_is_latent else source
    resized = resize(image[..., :3], size)
    source_latent = None
    if keep_detail:
        source_latent = source if source_is_latent else encode(vae, image[..., :3], tiling)
    del image
    z = encode(vae, resized, tiling)
    del resized
    if source_latent is None:
        return z
    kept = keep_latent_detail(spatial(z), spatial(source_latent))
    return kept.unsqueeze(2) if z.dim() == 5 else kept


def lanczos(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """ComfyUI's Lanczos resize of an IMAGE to ``size`` (H, W) (Pixelsmith's pixel-space resize)."""
    out = comfy.utils.common_upscale(image.movedim(-1, 1), size[1], size[0], "lanczos", "disabled")
    return out.movedim(1, -1)


# --------------------------------------------------------------------------------------------- #
# Guider, schedule, geometry
# --------------------------------------------------------------------------------------------- #


def cfg_guider(model: ModelPatcher, positive: Any, negative: Any, cfg: float) -> comfy.samplers.CFGGuider:
    """ComfyUI's CFGGuider on ``model`` with the prompts and the CFG scale set."""
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(float(cfg))
    return guider


def leading_timesteps(train_steps: int, steps: int) -> list[int]:
    """The DDIM "leading" timesteps ``t_i = i·⌊T/N⌋ + 1`` for ``i = N-1, ..., 0``: exactly ``N`` of them.

    Diffusers' ``timestep_spacing="leading"`` with ``steps_offset=1``, as the official SDXL
    pipelines of Pixelsmith and FreeScale sample (T = 1000, N = 50: 981, 961, ..., 1). Refuses
    ``N ≥ T``, which would need a timestep past the end of the training schedule.
    """
    steps, train_steps = int(steps), int(train_steps)
    if not 1 <= steps < train_steps:
        raise ValueError(f"steps: {steps} is outside 1..{train_steps - 1} for this model's {train_steps}-step "
                         f"training schedule; use fewer steps.")
    ratio = train_steps // steps
    return [i * ratio + 1 for i in reversed(range(steps))]


def leading_sigmas(model: ModelPatcher, steps: int) -> torch.Tensor:
    """The ``steps`` leading sigmas of ``model`` (:func:`leading_timesteps`), then 0, on the CPU.

    ``model_sampling.sigmas[t]`` is the sigma of discrete timestep ``t``. ComfyUI's
    ``ddim_uniform`` scheduler gives the same sigmas only when ``steps`` divides the training
    steps; otherwise it adds extra steps (31 at 30 steps, starting at t = 991).
    """
    table = model.get_model_object("model_sampling").sigmas.detach().cpu().float()
    index = torch.tensor(leading_timesteps(len(table), steps))
    return torch.cat([table[index], table.new_zeros(1)])


def latent_px(vae: VAE) -> int:
    """Image px per latent cell along each axis, as the VAE encodes (8 for SD/SDXL)."""
    return int(vae.spacial_compression_encode())


# Image px per latent cell of the latent formats that do not say so themselves (ComfyUI 0.3.75's
# formats carry no ``spacial_downscale_ratio``): the downscale of the VAE each format belongs to.
# Looked up along the format's class hierarchy (Flux derives from SD3). Flux.2's latents are
# Flux.2 VAE latents (32 channels at 8 px per cell) packed 2×2 into 128 channels: 16 px per cell.
LATENT_PX = {"SD15": 8, "SDXL": 8, "SDXL_Playground_2_5": 8, "SD3": 8, "Flux": 8, "Wan21": 8, "Flux2": 16}
# Latent formats whose cells are ``p × p`` packs of a finer latent: p (see LATENT_PX).
LATENT_PACKING = {"Flux2": 2}


def _latent_format(model: ModelPatcher | object) -> object | None:
    latent_format = getattr(model, "latent_format", None)
    if latent_format is None:
        latent_format = getattr(getattr(model, "model", None), "latent_format", None)
    return latent_format


def _by_format(table: dict[str, int], latent_format: object) -> int | None:
    return next((table[c.__name__] for c in type(latent_format).__mro__ if c.__name__ in table), None)


def model_latent_px(model: ModelPatcher | object) -> int:
    """Image px per latent cell from the model's latent format, for nodes that get no VAE.

    ``model`` is a ModelPatcher or a ``comfy.model_base`` model. The format's own
    ``spacial_downscale_ratio`` wins where ComfyUI sets one; else :data:`LATENT_PX`. A format
    neither knows is refused (never assumed to be 8); nodes that also get the VAE pass
    :func:`latent_px` of it instead.
    """
    latent_format = _latent_format(model)
    ratio = getattr(latent_format, "spacial_downscale_ratio", None)
    if ratio is None:
        ratio = _by_format(LATENT_PX, latent_format)
    if ratio is None:
        raise ValueError(
            f"model: UltraRes does not know how many image pixels one latent cell of this model covers (latent "
            f"format {type(latent_format).__name__}); this node supports SD1.x, SDXL, SD3, Flux, Flux.2, "
            "Qwen-Image and Lumina2/Z-Image.")
    return int(ratio)


def latent_packing(model: ModelPatcher | object) -> int:
    """``p`` where each latent cell of the model packs ``p × p`` cells of a finer latent (2 for
    Flux.2), else 1. A packed latent must not be resampled as it is: unpack it first."""
    return _by_format(LATENT_PACKING, _latent_format(model)) or 1


def dit_patch_side(diffusion_model: object) -> int:
    """Latent cells per token side of a DiT (its ``patch_size``; 1 when it has none)."""
    side = getattr(diffusion_model, "patch_size", 1)
    return int(side[-1] if isinstance(side, (tuple, list)) else side)


def check_keep_detail(model: ModelPatcher, keep_detail: bool) -> None:
    """Refuse ``keep_detail`` on packed latents, which it would resample as they are."""
    if keep_detail and latent_packing(model) > 1:
        raise ValueError("keep_detail: this model's latents are packed (Flux.2: 2x2 cells in 128 channels), and "
                         "keep_detail would resample them as they are; turn keep_detail off for this model.")


LATENT_COPIES = 6  # full-size latents a stage holds at once: x, its snapshot, noise, x_up, x0, step map


def stage_ram_bytes(batch: int, src_hw: tuple[int, int], size: tuple[int, int], channels: int, px: int) -> int:
    """RAM a stage needs at its peak, in bytes: the float source and resized images (+ the resize's
    8-bit copies) and ``LATENT_COPIES`` float latents of ``channels`` at ``px`` image px per cell."""
    src, dst = src_hw[0] * src_hw[1], size[0] * size[1]
    return batch * 4 * (3 * (src + 2 * dst) + LATENT_COPIES * channels * dst // (px * px))


def noise_for(samples: torch.Tensor, seed: int, batch_index: list[int] | None = None) -> torch.Tensor:
    """Unit Gaussian noise from an explicit CPU generator; equals ComfyUI's RandomNoise for ``seed``."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return comfy.sample.prepare_noise_inner(samples, generator, batch_index)


# --------------------------------------------------------------------------------------------- #
# Progress
# --------------------------------------------------------------------------------------------- #


class StageProgress:
    """One progress bar (ComfyUI's, with previews, and a console bar with ETA) over many passes.

    ``total`` counts the steps of every pass the node will run. Each pass takes a callback from
    :meth:`callback`; the bar then advances to ``offset + step + 1``, where ``offset`` is the
    number of steps done when the callback was made. Every step checks for interruption, so a
    Cancel stops the node within one step. Use as a context manager (the console bar closes).
    """

    def __init__(self, model: ModelPatcher, total: int, desc: str, *, console: bool = True):
        self.total = int(total)
        self.done = 0
        self.bar = comfy.utils.ProgressBar(self.total)
        self.previewer = latent_preview.get_previewer(model.load_device, model.model.latent_format)
        self.console = tqdm(total=self.total, desc=desc, unit="step",
                            disable=not console or not comfy.utils.PROGRESS_BAR_ENABLED)

    def callback(self, label: str | None = None, first_step: int = 0) -> SamplerCallback:
        """A sampler callback for the next pass; ``first_step``: index of its first step (a
        restarted schedule reports absolute step indices from there)."""
        offset = self.done - int(first_step)

        def on_step(step: int, x0: torch.Tensor, x: torch.Tensor, total_steps: int) -> None:
            comfy.model_management.throw_exception_if_processing_interrupted()
            self.advance(offset + step + 1, x0, label)

        return on_step

    def advance(self, done: int, x0: torch.Tensor | None = None, label: str | None = None) -> None:
        """Set the bar to ``done`` steps, with a preview of ``x0`` when given."""
        self.done = min(int(done), self.total)
        preview = None
        if x0 is not None and self.previewer is not None:
            preview = self.previewer.decode_latent_to_preview_image("JPEG", x0)
        self.bar.update_absolute(self.done, self.total, preview)
        self.console.update(self.done - self.console.n)
        if label:
            self.console.set_postfix_str(label)

    def close(self) -> None:
        self.console.close()

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
