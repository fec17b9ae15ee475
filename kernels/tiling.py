"""Tile and window geometry shared by every method (pure Python/torch).

One place for "where do the tiles go": Pixelsmith's patch windows and ``fast``-mode rounds
(:func:`random_cover_starts`),
FreeScale's local-attention windows and the tiled VAE decode of Save Large Image all place their
windows with :func:`starts`, and blend overlapping tiles with :func:`tile_weights`.
"""
from __future__ import annotations

from typing import NamedTuple

import torch


class PatchBox(NamedTuple):
    """A window in latent px: rows ``[top, top + height)``, cols ``[left, left + width)``."""

    top: int
    left: int
    height: int
    width: int

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices for the last two dims of a latent: ``x[..., *box.slices]``."""
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)


def starts(length: int, size: int, stride: int, offset: int = 0) -> list[int]:
    """Start offsets of windows of ``size`` covering ``[0, length)``, in increasing order.

    The windows start at 0, at ``offset + k·stride`` (inside the axis) and at ``length - size``,
    so the last window ends exactly at ``length`` and every window lies inside the axis; with
    ``stride <= size`` they cover every position. ``length <= size`` gives the single start 0.

    * overlapping tiles with at least ``overlap`` shared px: ``stride = size - overlap``;
    * 50 %-overlap windows (FreeScale, ali-vilab/FreeScale@d5a2256 ``scale_attention.py:24-81``):
      ``stride = size // 2``;
    * a grid shifted by ``offset``: ``stride = size``.
    """
    if size < 1 or stride < 1 or offset < 0:
        raise ValueError(f"starts: need size >= 1, stride >= 1 and offset >= 0, got {size}, {stride}, {offset}")
    if length <= size:
        return [0]
    return sorted({0, *range(offset, length - size, stride), length - size})


RANDOM_COVER_DRAWS = 16


def random_cover_starts(length: int, size: int, overlap: int, generator: torch.Generator) -> list[int]:
    """Starts of few windows of ``size`` covering ``[0, length)`` with neighbours sharing at least
    ``overlap`` px, the spare overlap spread at random over the gaps (a new layout per draw).

    ``n = ceil((length - overlap) / (size - overlap))`` windows, one more when that fits so tightly
    that the borders could move by less than half a stride; the first starts at 0, the last ends
    at ``length``. Used for Pixelsmith ``fast`` rounds, whose window borders must fall
    somewhere new every round without costing more windows than a fixed overlapping grid.
    """
    if not 0 <= overlap < size:
        raise ValueError(f"random_cover_starts: need 0 <= overlap < size, got {overlap}, {size}")
    if length <= size:
        return [0]
    stride = size - overlap
    n = -(-(length - overlap) // stride)
    spare = n * stride + overlap - length  # overlap beyond the minimum, shared by the n - 1 gaps
    if 2 * spare < stride:  # too tight a fit leaves the borders little room to move: one more window
        n, spare = n + 1, spare + stride
    for _ in range(RANDOM_COVER_DRAWS):  # every gap keeps at least 1 px (a window never repeats)
        cuts = torch.randint(0, spare + 1, (n - 2,), generator=generator, device=generator.device).sort().values
        extra = torch.diff(torch.cat([cuts.new_zeros(1), cuts, cuts.new_full((1,), spare)])).tolist()
        if max(extra) < stride:
            break
    else:  # rare: spread the spare overlap evenly
        extra = [spare // (n - 1) + (j < spare % (n - 1)) for j in range(n - 1)]
    out = [0]
    for e in extra:
        out.append(out[-1] + stride - int(e))
    return out


def axis_weights(start: int, size: int, length: int, ramp: int) -> torch.Tensor:
    """1-D blend weight of a tile ``[start, start + size)`` on an axis of ``length`` px.

    Linear ramps ``(i + 0.5) / ramp`` over the first and last ``ramp`` px, except at the image
    border (weight 1 there, so edges are not darkened); 1 in between. Strictly positive.
    Returns float32 ``(size,)``.
    """
    w = torch.ones(size, dtype=torch.float32)
    r = min(ramp, size // 2)
    if r > 0:
        ramp_up = (torch.arange(r, dtype=torch.float32) + 0.5) / r  # (r,)
        if start > 0:
            w[:r] = torch.minimum(w[:r], ramp_up)
        if start + size < length:
            w[size - r:] = torch.minimum(w[size - r:], ramp_up.flip(0))
    return w


def tile_weights(top: int, left: int, h: int, w: int, full_hw: tuple[int, int], ramp: int) -> torch.Tensor:
    """Separable 2-D blend weight ``(h, w)`` of a tile at ``(top, left)`` in an image ``full_hw``.

    Blending tiles by these weights, normalised by their sum, is a partition of unity for any
    tile size and overlap.
    """
    wy = axis_weights(top, h, full_hw[0], ramp)
    wx = axis_weights(left, w, full_hw[1], ramp)
    return wy[:, None] * wx[None, :]
