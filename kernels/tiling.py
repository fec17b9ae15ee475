"""Tile and window geometry shared by every method (pure Python/torch).

One place for "where do the tiles go": Pixelsmith's patch windows and ``fast``-mode grids,
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
    * a grid shifted by ``offset`` (Pixelsmith ``fast`` rounds): ``stride = size``.
    """
    if size < 1 or stride < 1 or offset < 0:
        raise ValueError(f"starts: need size >= 1, stride >= 1 and offset >= 0, got {size}, {stride}, {offset}")
    if length <= size:
        return [0]
    return sorted({0, *range(offset, length - size, stride), length - size})


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
