"""Pixelsmith (Tragakis et al., 2024): the Slider, guided patch denoising, in ComfyUI's k-space.

Pure PyTorch building blocks plus the whole patch sampler as one k-diffusion-style function.
The behaviour follows the official code as described in the algorithms spec, §1.5-1.7 and §1.11-1.13
(``docs/algorithms.md``). Conventions:

* latents are ``(B, C, H, W)`` in k-space, ``x_k = x_vp / sqrt(ā)``, ``σ = sqrt((1 - ā) / ā)``;
* ``sigmas`` is a ComfyUI/k-diffusion schedule of ``N + 1`` values, normally ending in 0
  (``ddim_uniform`` with 50 steps reproduces the official timesteps 981, 961, ..., 1, spec §0);
* the per-pixel timestep map τ is stored as the integer index ``k`` into ``sigmas`` (``τ = T[k]``),
  so "furthest behind" (max τ) is the *smallest* index and ``k == N`` means finished;
* ``S`` (``slider``) is the number of guided steps: phase fusion with ``G[k]`` for ``k < S`` and the
  chessboard with ``G[k + 1]`` for ``k < S - 1`` (spec §1.13).

Nothing here imports ComfyUI; randomness comes only from an explicit ``torch.Generator``.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from .pixelsmith_ops import (
    PatchBox,
    averaging_band,
    chessboard_mask,
    draw_chessboard_coins,
    guidance_patch,
    patch_box_at,
    phase_fusion,
    revert,
    round_grid,
    select_patches,
    take_disjoint,
    write_back,
)

__all__ = [
    "PatchBox",
    "phase_fusion",
    "draw_chessboard_coins",
    "chessboard_mask",
    "guidance_patch",
    "averaging_band",
    "revert",
    "write_back",
    "patch_box_at",
    "select_patches",
    "round_grid",
    "take_disjoint",
    "sample_pixelsmith",
]

Denoiser = Callable[[torch.Tensor, torch.Tensor, "list[PatchBox]"], torch.Tensor]


# --------------------------------------------------------------------------------------------- #
# The patch sampler (spec §1.5, §1.12)
# --------------------------------------------------------------------------------------------- #


def _per_round_estimate(latent_hw: tuple[int, int], patch_hw: tuple[int, int], mode: str) -> float:
    """Prior for patches per round: 1 if one window covers the latent; else ≈2× a tiling for
    random centres (§1.5), or the mean of the aligned and shifted grids in fast mode."""
    rows, cols = (math.ceil(n / p) for n, p in zip(latent_hw, patch_hw))
    if rows * cols == 1:
        return 1
    if mode == "fast":
        return (rows * cols + (rows + (rows > 1)) * (cols + (cols > 1))) / 2
    return 2 * rows * cols


@torch.no_grad()
def sample_pixelsmith(
    denoise: Denoiser,
    z_up: torch.Tensor,
    noise: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    slider: int,
    *,
    generator: torch.Generator,
    patch_size: int = 128,
    band: int = 10,
    mode: str = "faithful",
    patch_batch: int = 1,
    callback: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool | None] | None = None,
    device: torch.device | str | None = None,
    signal_scales: Sequence[float] | None = None,
) -> torch.Tensor:
    """Pixelsmith patch sampler with the Slider (Tragakis et al., 2024; spec §1.5-1.7, §1.12).

    Starts from ``G[0] = z_up + σ_0·n`` and repeats, until every pixel has taken all ``N`` steps:
    pick window(s) R around pixels furthest behind, phase-fuse with ``G[k][R]`` if ``k < S``, revert
    already-advanced pixels to the round snapshot, denoise at ``σ_k``, Euler step to ``σ_{k+1}``
    (= DDIM η=0; ``σ_{k+1} = 0`` gives x0), chessboard-replace with ``G[k+1][R]`` if ``k < S - 1``,
    write back with the 50/50 band average, advance τ. Returns the final latent (``x0`` when the
    schedule ends in 0).

    Args:
        denoise: ``denoise(y, sigma, boxes) -> x0``. ``y`` is ``(n·B, C, h, w)`` on ``device``,
            patch-major (rows ``i·B .. i·B + B - 1`` belong to ``boxes[i]``), ``sigma`` is
            ``(n·B,)`` holding one value, ``boxes`` the ``n`` windows (for slicing spatial
            conditioning and SDXL crop coords).
        z_up: upscaled guidance latent, ``(B, C, H, W)`` in k-space; stays on its device.
        noise: unit Gaussian ``n`` of the same shape, shared by every ``G[k]`` (spec §1.4).
        sigmas: ``N + 1`` decreasing sigmas (ComfyUI ``ddim_uniform`` for the official timesteps).
        slider: S, the number of guided steps, clamped to ``[0, N]``; 0 = no guidance at all.
        generator: the only source of randomness (patch centres, chessboard coins).
        patch_size: window side P in latent px (official 128), clamped to the latent's height and
            width so small latents work (a P ≥ H, W run is then a plain full-latent sampler).
        band: half-width of the averaging band in latent px (official 10).
        mode: ``"faithful"``: one patch per ``denoise`` call, official random order.
            ``"fast"``: each round is covered by a grid of windows (:func:`round_grid`: aligned
            and randomly shifted grids alternate), taken in random order, up to ``patch_batch``
            disjoint windows per call; same guidance, mask and band. About half the windows of
            ``"faithful"`` per step.
        patch_batch: patches per call in ``"fast"`` mode (ignored, i.e. 1, in ``"faithful"``).
        callback: called after each call with a dict: ``i`` (call index), ``patches`` (done),
            ``patches_total`` (estimate, exact once finished), ``step`` and ``steps`` (current min
            step index and N), ``sigma``, ``boxes``, ``x`` (live full latent, read only), ``tau``
            (live step-index map, read only), ``denoised`` (x0 of the patches), ``progress``
            (exact fraction of pixel-steps done).
        should_stop: called before each ``denoise`` call; it should raise to abort (e.g. ComfyUI's
            interrupt check). A truthy return value also aborts, with ``InterruptedError``.
        device: where patches are processed and denoised (default: ``z_up.device``).
        signal_scales: ``α_k`` for each sigma, the scale of the clean latent in the noisy one,
            ``x_k = α_k·z + σ_k·n`` (default all 1: k-space / ε- and v-prediction models;
            rectified flow uses ``α_k = 1 - σ_k``). Guidance is ``G[k] = α_k·z_up + σ_k·n``. The
            Euler step on ``(x - x0)/σ`` is the DDIM(η=0) step in both parameterisations.
    """
    if z_up.dim() != 4 or noise.shape != z_up.shape:
        raise ValueError(
            f"sample_pixelsmith: z_up must be (B, C, H, W) and noise the same shape, got "
            f"{tuple(z_up.shape)} and {tuple(noise.shape)}"
        )
    if mode not in ("faithful", "fast"):
        raise ValueError(f"sample_pixelsmith: mode must be 'faithful' or 'fast', got {mode!r}")
    if patch_size < 1 or band < 0 or patch_batch < 1:
        raise ValueError(
            f"sample_pixelsmith: need patch_size >= 1, band >= 0, patch_batch >= 1; got "
            f"{patch_size}, {band}, {patch_batch}"
        )
    if slider < 0:
        raise ValueError(f"sample_pixelsmith: slider must be >= 0, got {slider}")
    sigma_list = [float(s) for s in sigmas]
    N = len(sigma_list) - 1
    if N < 1:
        raise ValueError("sample_pixelsmith: sigmas must hold at least 2 values")
    if min(sigma_list[:-1]) <= 0.0:
        raise ValueError("sample_pixelsmith: only the last sigma may be 0 (Euler divides by σ_k)")
    # Deviation: the official code requires 1 <= S <= 50 (§1.4). S > N is clamped (every step
    # guided) so a node can keep its slider when the step count changes; S = 0 is allowed and
    # means unguided patch sampling from G[0].
    S = min(slider, N)
    if signal_scales is None:
        alphas = [1.0] * (N + 1)
    else:
        alphas = [float(a) for a in signal_scales]
        if len(alphas) != N + 1:
            raise ValueError(
                f"sample_pixelsmith: signal_scales needs one value per sigma ({N + 1}), "
                f"got {len(alphas)}"
            )
    max_patches = 1 if mode == "faithful" else patch_batch
    device = torch.device(device) if device is not None else z_up.device

    B, C, H, W = z_up.shape
    patch_hw = (min(patch_size, H), min(patch_size, W))
    ph, pw = patch_hw

    # Full-size state on the storage device (spec §1.5): x, x_prev snapshot, τ as step index.
    x = alphas[0] * z_up + sigma_list[0] * noise  # G[0], (B, C, H, W); a new tensor, inputs stay untouched
    x_prev = x.clone()
    tau = torch.zeros(H, W, dtype=torch.int32, device=z_up.device)  # (H, W)
    k_min, left_in_round = 0, H * W  # smallest step index, pixels still at it

    per_round = _per_round_estimate((H, W), patch_hw, mode)
    queue: list[PatchBox] = []  # fast mode: windows of the current round not yet taken
    patches_done = rounds_done = patches_in_rounds = patches_this_round = calls = 0

    def to_dev(t: torch.Tensor) -> torch.Tensor:
        return t.to(device, non_blocking=True)

    while k_min < N:
        if should_stop is not None and should_stop():
            raise InterruptedError("sample_pixelsmith: stopped by should_stop()")
        k = k_min
        sigma, sigma_next = sigma_list[k], sigma_list[k + 1]
        if mode == "faithful":
            boxes = select_patches(tau.cpu(), k, patch_hw, 1, generator)  # no copy on CPU
        else:
            if not queue:
                queue = round_grid((H, W), patch_hw, shifted=k % 2 == 1, generator=generator)
            boxes = take_disjoint(queue, max_patches)
        n = len(boxes)

        # Gather the patches: (n, B, C, ph, pw); m: (n, 1, 1, ph, pw).
        y = torch.stack([to_dev(x[..., r, c]) for r, c in (b.slices for b in boxes)])
        y_prev = torch.stack([to_dev(x_prev[..., r, c]) for r, c in (b.slices for b in boxes)])
        x_patch = y  # current x[R]; y is rebound below, never written in place
        m = torch.stack([to_dev(tau[r, c] == k) for r, c in (b.slices for b in boxes)])
        m = m.view(n, 1, 1, ph, pw)

        # Step 4: phase fusion with G[k][R] (k < S), over the whole patch, *before* the revert.
        # For k >= S the official FFT round trip is an identity up to rounding: skipped (§1.6).
        if k < S:
            g = torch.stack([to_dev(guidance_patch(z_up, noise, sigma, b, alphas[k])) for b in boxes])
            y = phase_fusion(y, g)
        # Step 5: coins drawn for every patch, guided or not, so patch positions for a given seed do
        # not depend on the slider.
        sd, sl = draw_chessboard_coins(n, generator)
        # Step 6: revert advanced pixels to the snapshot (raw, un-fused values).
        y = revert(y, y_prev, m)

        # Step 7: denoise at σ_k, Euler (DDIM η=0) to σ_{k+1}.
        y_in = y.reshape(n * B, C, ph, pw)
        x0 = denoise(y_in, y_in.new_full((n * B,), sigma), list(boxes))
        x0 = x0.to(device=y.device, dtype=y.dtype).reshape(y.shape)
        if sigma_next == 0.0:
            y_next = x0
        else:
            y_next = y + (sigma_next - sigma) / sigma * (y - x0)

        # Step 8: chessboard guidance with G[k+1][R] (k < S - 1, spec §1.13).
        if k < S - 1:
            M = chessboard_mask(ph, pw, sd, sl, device=device).view(n, 1, 1, ph, pw)
            g_next = torch.stack(
                [to_dev(guidance_patch(z_up, noise, sigma_next, b, alphas[k + 1])) for b in boxes]
            )
            y_next = torch.where(M, g_next, y_next)

        # Steps 9-10: write back with the band average, advance τ where m = 1.
        new_patch = write_back(x_patch, y_next, m, band)
        for i, b in enumerate(boxes):
            r, c = b.slices
            x[..., r, c] = new_patch[i].to(x.device, x.dtype)
            tau[r, c] += m[i, 0, 0].to(tau.device, torch.int32)
        left_in_round -= int(m.sum())

        # Step 11: new round when every pixel shares the same step: snapshot x.
        patches_done += n
        patches_this_round += n
        calls += 1
        if left_in_round == 0:
            k_min, left_in_round = k_min + 1, H * W
            queue = []
            rounds_done += 1
            patches_in_rounds += patches_this_round
            patches_this_round = 0
            per_round = patches_in_rounds / rounds_done
            if k_min < N:
                x_prev.copy_(x)

        if callback is not None:
            rounds_left = N - rounds_done - (1 if patches_this_round else 0)
            this_round_left = max(per_round - patches_this_round, 1) if patches_this_round else 0
            estimate = patches_done + round(this_round_left + per_round * rounds_left)
            callback({
                "i": calls - 1,
                "patches": patches_done,
                "patches_total": estimate,
                "step": k_min,
                "steps": N,
                "sigma": sigma,
                "boxes": list(boxes),
                "x": x,
                "tau": tau,
                "denoised": x0,
                "progress": (k_min * H * W + (H * W - left_in_round)) / (N * H * W),
            })
    return x
