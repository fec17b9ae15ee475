"""Pixelsmith (Tragakis et al., 2024): guidance operators and patch selection (pure PyTorch).

FFT phase fusion and the chess-like guidance mask (paper Fig. 3), guidance formed per patch in closed
form, revert, band average and write-back of overlapping patches (paper Figs. 2 and 8) and the choice
of patch windows. Paper: Tragakis et al., "Is One GPU Enough? Pushing Image Generation at
Higher-Resolutions with Foundation Models", NeurIPS 2024, arXiv:2406.07251. Official code:
Thanos-DB/Pixelsmith@28c992b ``pixelsmith_pipeline.py`` (the line numbers below are in that file).
The sampler that chains them is ``kernels/pixelsmith.py``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .tiling import PatchBox, starts

# Candidates drawn per rejection-sampling attempt when picking a patch centre (`select_patches`).
_REJECTION_DRAWS = 256


# --------------------------------------------------------------------------------------------- #
# Guidance operators (official ``pixelsmith_pipeline.py:1716-1720, 1772-1801``)
# --------------------------------------------------------------------------------------------- #


def phase_fusion(y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """FFT phase fusion of Pixelsmith (paper Fig. 3; official ``pixelsmith_pipeline.py:1772-1787``).

    With orthonormal ``rfft2`` over the last two dims, ``Y = F(y)`` and ``Γ = F(g)``, the result is
    ``F⁻¹(|Y| · e^{iφ})`` with ``φ = arg(e^{i arg Y} + e^{i arg Γ})``: the amplitude of the current
    latent and the circular mean (unit-phasor average, equal weights) of the two phases.
    Computed in fp32 whatever the input dtype, returned in ``y``'s dtype.
    ``phase_fusion(z, z) == z``.

    Args:
        y: current latent patch, ``(..., h, w)``.
        g: guidance latent patch, same shape.
    """
    if y.shape != g.shape:
        raise ValueError(f"phase_fusion: y {tuple(y.shape)} and g {tuple(g.shape)} differ in shape")
    size = y.shape[-2:]
    Y = torch.fft.rfft2(y.float(), norm="ortho")  # (..., h, w // 2 + 1) complex64
    Gamma = torch.fft.rfft2(g.float(), norm="ortho")
    one = torch.ones_like(Y.real)
    # arg(0) = 0: a zero coefficient contributes the phasor 1, as in the official code.
    phasor_sum = torch.polar(one, Y.angle()) + torch.polar(one, Gamma.angle())
    fused = torch.polar(Y.abs(), phasor_sum.angle())
    return torch.fft.irfft2(fused, s=size, norm="ortho").to(y.dtype)  # (..., h, w)


def draw_chessboard_coins(
    n: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw the fair coins ``(sd, sl)`` of the chessboard phase, one pair each.

    As the official ``pixelsmith_pipeline.py:1793-1801``. Returns two int64 CPU tensors of shape
    ``(n,)`` with values in {0, 1}.
    """
    coins = torch.randint(0, 2, (n, 2), generator=generator, device=generator.device)
    return coins[:, 0].cpu(), coins[:, 1].cpu()


def chessboard_mask(
    height: int,
    width: int,
    sd: torch.Tensor | int,
    sl: torch.Tensor | int,
    offset: tuple[int, int] = (0, 0),
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Chessboard guidance mask M with 1×1 latent-px cells (official ``d_rate = 2``, ``pixelsmith_pipeline.py:1793``).

    ``M[u, v] = 1`` iff ``(u + u0) + (v + v0) + sd + sl`` is even, with patch-local coords
    ``(u, v)`` and ``offset = (u0, v0)``, the coords of the window's first pixel in the frame the
    parity is taken in: ``(0, 0)`` = patch-local, as in the official code (each patch draws its
    own coins, so any fixed offset only relabels the two phases).

    Args:
        sd, sl: coins, ints or tensors of shape ``(n,)``, one pair per patch.
    Returns:
        bool mask ``(n, h, w)`` (``n = 1`` for int coins).
    """
    phase = (torch.as_tensor(sd).reshape(-1) + torch.as_tensor(sl).reshape(-1)).to(device)  # (n,)
    u = torch.arange(height, device=device).view(1, height, 1) + offset[0]
    v = torch.arange(width, device=device).view(1, 1, width) + offset[1]
    return (u + v + phase.view(-1, 1, 1)) % 2 == 0  # (n, h, w)


def guidance_patch(
    z_up: torch.Tensor, n: torch.Tensor, sigma: float, box: PatchBox, alpha: float = 1.0
) -> torch.Tensor:
    """Guidance ``G_k[R] = α_k · z_up[R] + σ_k · n[R]``, formed per patch (``pixelsmith_pipeline.py:1716-1720``).

    With ``α = 1`` this is the k-space form of the official ``sqrt(ā) z_up + sqrt(1 - ā) n``; forming
    it on the fly replaces the S full-size copies the official code keeps, exactly. ``α ≠ 1`` is
    the signal scale of other parameterisations (rectified flow: ``α = 1 - σ``).
    """
    rows, cols = box.slices
    z = z_up[..., rows, cols]
    if alpha != 1.0:
        z = alpha * z
    return z + sigma * n[..., rows, cols]  # (B, C, h, w)


# --------------------------------------------------------------------------------------------- #
# Overlap handling (paper Figs. 2 and 8; official loop ``pixelsmith_pipeline.py:1747-1948``)
# --------------------------------------------------------------------------------------------- #


def revert(y: torch.Tensor, y_prev: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Revert advanced pixels to the round's snapshot: ``m·y + (1 - m)·y_prev`` (paper Fig. 2).

    ``m`` (bool, broadcastable to ``y``) is 1 where the pixel is still at the patch's noise level.
    """
    return torch.where(m, y, y_prev)


def averaging_band(m: torch.Tensor, band: int = 10) -> torch.Tensor:
    """Band B of the 50/50 overlap average (paper Fig. 8; ``pixelsmith_pipeline.py:1919-1930``).

    B = pixels with ``m = 0`` within Chebyshev distance ``≤ band`` of some ``m = 1`` pixel of the
    same patch, found by a ``(2·band + 1)²`` max-pool dilation of m. The official code finds the
    same set as the pixels where a 21×21 reflect-padded box blur of m is strictly between 0 and 1;
    reflection adds no nearer neighbour, so both agree.

    Args:
        m: bool ``(..., h, w)``.
    Returns:
        bool ``(..., h, w)``.
    """
    if band < 0:
        raise ValueError(f"averaging_band: band must be >= 0, got {band}")
    h, w = m.shape[-2:]
    flat = m.reshape(-1, 1, h, w).float()  # (N, 1, h, w)
    # max_pool2d pads with -inf, i.e. no m = 1 outside the patch.
    dilated = F.max_pool2d(flat, kernel_size=2 * band + 1, stride=1, padding=band) > 0.5
    return dilated.reshape(m.shape) & ~m


def write_back(
    x_patch: torch.Tensor, y_next: torch.Tensor, m: torch.Tensor, band: int = 10
) -> torch.Tensor:
    """New value of ``x[R]`` after a patch step (official ``pixelsmith_pipeline.py:1919-1930``).

    ``y_next`` where ``m = 1``; ``(y_next + x[R]) / 2`` in the band B (``averaging_band``); the old
    ``x[R]`` elsewhere. A hard 50/50 average, no ramp, as in the official code.

    Args:
        x_patch: current ``x[R]``, ``(..., h, w)``.
        y_next: denoised-and-stepped patch at the next noise level, same shape.
        m: bool mask broadcastable to ``x_patch``.
    """
    in_band = averaging_band(m, band)
    blended = torch.where(in_band, 0.5 * (y_next + x_patch), x_patch)
    return torch.where(m, y_next, blended)


# --------------------------------------------------------------------------------------------- #
# Patch selection (official ``get_value_coordinates`` in the loop, ``pixelsmith_pipeline.py:1747-1948``)
# --------------------------------------------------------------------------------------------- #


def patch_box_at(
    row: int, col: int, latent_hw: tuple[int, int], patch_hw: tuple[int, int]
) -> PatchBox:
    """Window of size ``patch_hw`` centred on pixel ``(row, col)``, clamped inside the latent.

    Same as the official clamp of the centre to ``[p, H - p]`` for even sizes; the window always
    contains ``(row, col)``.
    """
    (H, W), (ph, pw) = latent_hw, patch_hw
    top = min(max(row - ph // 2, 0), H - ph)
    left = min(max(col - pw // 2, 0), W - pw)
    return PatchBox(top, left, ph, pw)


def _eligible(
    rows: torch.Tensor,
    cols: torch.Tensor,
    latent_hw: tuple[int, int],
    patch_hw: tuple[int, int],
    taken: Sequence[PatchBox],
) -> torch.Tensor:
    """For candidate centres ``(rows, cols)``: does their clamped window avoid all of ``taken``?"""
    (H, W), (ph, pw) = latent_hw, patch_hw
    tops = (rows - ph // 2).clamp(0, H - ph)
    lefts = (cols - pw // 2).clamp(0, W - pw)
    ok = torch.ones_like(rows, dtype=torch.bool)
    for box in taken:
        ok &= ((tops - box.top).abs() >= ph) | ((lefts - box.left).abs() >= pw)
    return ok


def select_patches(
    tau: torch.Tensor,
    k: int,
    patch_hw: tuple[int, int],
    max_patches: int,
    generator: torch.Generator,
) -> list[PatchBox]:
    """Choose up to ``max_patches`` disjoint windows on pixels furthest behind.

    Each centre is uniform among pixels with ``tau == k`` (the current max τ) whose clamped window
    does not overlap the windows already chosen in this call. The first choice is exactly the
    official rule (``get_value_coordinates``, ``pixelsmith_pipeline.py:1747-1948``); ``max_patches = 1``
    is the official sampler. Uniform draws are done by rejection
    sampling over the whole map (cheap on gigapixel latents), with an exact fallback over all
    eligible pixels, so the choice is uniform either way.

    Args:
        tau: int step-index map ``(H, W)``.
        k: the smallest value in ``tau`` (furthest behind).
    Returns:
        1 to ``max_patches`` boxes (fewer when no eligible pixel is left).
    """
    H, W = tau.shape
    tau_flat = tau.reshape(-1)
    gen_device = generator.device
    boxes: list[PatchBox] = []
    while len(boxes) < max_patches:
        idx = torch.randint(0, H * W, (_REJECTION_DRAWS,), generator=generator, device=gen_device)
        idx = idx.cpu()
        ok = tau_flat[idx] == k
        ok &= _eligible(idx // W, idx % W, (H, W), patch_hw, boxes)
        hits = idx[ok]
        if hits.numel() > 0:
            chosen = int(hits[0])  # first accepted draw of an i.i.d. uniform sequence: uniform
        else:
            # Exact fallback (few eligible pixels left): uniform among all of them.
            pool = torch.nonzero(tau_flat == k).reshape(-1)
            pool = pool[_eligible(pool // W, pool % W, (H, W), patch_hw, boxes)]
            if pool.numel() == 0:
                break
            pick = torch.randint(0, pool.numel(), (1,), generator=generator, device=gen_device)
            chosen = int(pool[int(pick)])
        boxes.append(patch_box_at(chosen // W, chosen % W, (H, W), patch_hw))
    if not boxes:
        raise RuntimeError(f"select_patches: no pixel at step index {k}")
    return boxes


def round_grid(
    latent_hw: tuple[int, int],
    patch_hw: tuple[int, int],
    generator: torch.Generator,
) -> list[PatchBox]:
    """All windows of one ``fast`` round, in random order: a grid of abutting windows at an offset
    drawn anew every round.

    Deviation from the official random centres (``pixelsmith_pipeline.py:1747-1948``), for ``fast``
    mode only. Each round's grid is shifted by a random ``(oy, ox)`` in ``[0, P)²``, so the window
    borders of one step fall somewhere new the next and no border piles up on a fixed line (the
    alternating aligned grid of earlier builds put every other step's borders on the multiples of
    P). Windows clamped at the latent's sides overlap their neighbour and are handled as any
    overlap (revert, band); they come after the inner windows, so their new pixels end at the
    neighbour's random border, not at P. About ``((L + P) / P)²`` windows per round for a latent
    side L; random centres need ≈ 2.5 ``(L / P)²`` (the official sampler's cost). Overlapping all
    of the grid's windows by the band was tried: on the demo model it grew extra objects.
    """
    (H, W), (ph, pw) = latent_hw, patch_hw
    dev = generator.device
    oy, ox = (int(torch.randint(0, p, (1,), generator=generator, device=dev)) for p in (ph, pw))
    boxes = [PatchBox(top, left, ph, pw) for top in starts(H, ph, ph, oy) for left in starts(W, pw, pw, ox)]
    order = torch.randperm(len(boxes), generator=generator, device=dev).tolist()

    def sides(box: PatchBox) -> int:  # 0 inside, 1 on a side of the latent, 2 in a corner
        return int(box.top in (0, H - ph) and H > ph) + int(box.left in (0, W - pw) and W > pw)

    return sorted((boxes[i] for i in order), key=sides)


def take_disjoint(queue: list[PatchBox], max_patches: int,
                  needed: Callable[[PatchBox], bool] | None = None) -> list[PatchBox]:
    """Remove and return up to ``max_patches`` mutually disjoint windows from ``queue``, in order.

    Windows for which ``needed(box)`` is False (every pixel already advanced this round by the
    windows around it) are dropped from the queue instead of taken.
    """
    taken: list[PatchBox] = []
    for box in list(queue):
        if len(taken) == max_patches:
            break
        if needed is not None and not needed(box):
            queue.remove(box)
        elif all(abs(box.top - t.top) >= box.height or abs(box.left - t.left) >= box.width for t in taken):
            taken.append(box)
            queue.remove(box)
    return taken
