"""FreeScale kernels: Scale Fusion, restrained dilation and tailored self-cascade helpers.

FreeScale (Qiu et al., 2024), "FreeScale: Unleashing the Resolution of Diffusion Models via
Tuning-Free Scale Fusion", arXiv:2412.09626. Behaviour follows the official code,
ali-vilab/FreeScale@d5a2256 (file:line references below are to that commit), on the SDXL
"leading" timesteps ``t_i = i·⌊1000/N⌋ + 1`` of the official pipeline (``nodes/_stage.py`` builds
them for the all-in-one node):

* Scale Fusion (``scale_attention.py:83-286``): the self-attention output is ``blur(L) + G − blur(G)``,
  with ``L`` the overlap-averaged windowed (local) self-attention, ``G`` the global (or, in fast mode,
  dilated) self-attention and ``blur`` a 3-D Gaussian over (h, w, channels).
* restrained dilated convolution (``pipeline_freescale.py:901-945``): dilation factor and the set of
  dilated steps.
* tailored self-cascade (``pipeline_freescale.py:855-994``): cosine skip-residual weight ``c1``
  (optionally with a per-pixel exponent from a region mask, ``pipeline_freescale_imgen.py:917-944``)
  and the blend ``x ← (1 − c1)·x + c1·N_i``.

Pure PyTorch: nothing from ComfyUI is imported here. Shapes: tokens ``X`` are ``(B, N, C)`` with
``N = h·w`` in row-major order; token maps are ``(B, h, w, C)``; latents are ``(B, C, H, W)``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from kornia.filters import get_gaussian_kernel1d

from . import tiling

AttnFn = Callable[[torch.Tensor], torch.Tensor]
"""Self-attention callable ``(B', N', C) -> (B', N', C_out)`` (incl. output projection)."""

BASE_PX: int = 1024
"""Base window in image px for SDXL (128 latent px). The turbo variant uses 512 (``scale_attention_turbo.py``)."""

NUM_TRAIN_TIMESTEPS: int = 1000

# ---------------------------------------------------------------------------------------------
# Scale numbers, window layout ("views")
# ---------------------------------------------------------------------------------------------


def scale_numbers(H_px: int, W_px: int, base_px: int = BASE_PX) -> tuple[int, int]:
    """Scale numbers ``(n_h, n_w) = (H_px // base, W_px // base)``, each at least 1.

    FreeScale (Qiu et al., 2024), Scale Fusion. The official code (``scale_attention.py:94-97``) divides
    by ``n_w`` and builds a ``2·n − 1`` kernel; clamping to 1 keeps targets below ``base_px`` from crashing.
    """
    return max(1, int(H_px) // base_px), max(1, int(W_px) // base_px)


def blur_kernel_size(n_h: int, n_w: int) -> int:
    """Gaussian kernel size ``K = 2·max(n_h, n_w) − 1`` (3 at 2048², 7 at 4096²).

    As the official ``scale_attention.py:162,172``.
    """
    return 2 * max(n_h, n_w, 1) - 1


@dataclass(frozen=True)
class WindowLayout:
    """Local-attention windows over an ``h × w`` token map zero-padded by ``(r_h, r_w)``.

    ``views`` holds ``(h0, h1, w0, w1)`` in *padded* coordinates (offset ``+r``), all of size
    ``win_h × win_w``, row-major over (row, column) as in the official ``get_views``
    (``scale_attention.py:24-81``).
    """

    h: int
    w: int
    win_h: int
    win_w: int
    stride_h: int
    stride_w: int
    r_h: int
    r_w: int
    views: tuple[tuple[int, int, int, int], ...]


def window_size(h: int, w: int, H_px: int, W_px: int, base_px: int = BASE_PX) -> tuple[int, int]:
    """Token window ``(win_h, win_w)`` for an ``h × w`` map of a ``H_px × W_px`` target.

    FreeScale (Qiu et al., 2024), ``scale_attention.py:113-122``. Officially the window is ``128/f`` tokens on the long
    axis with ``f = 128·n_h/h`` latent px per token, and keeps the image aspect on the short
    axis: i.e. it spans ``1/max(n_h, n_w)`` of *each* axis of the map (e.g. 2048×4096 at
    64×128 tokens → 16×32). We compute exactly that, ``(h // n, w // n)`` with ``n = max(n_h, n_w)``,
    from the real ``(h, w)``.
    Deviation from the official code (``scale_attention.py:114-122``), which infers ``(h, w)`` from
    ``N`` and the short-axis window from ``n_h/n_w``, only right for multiples of ``base_px``; here the
    short axis follows the true map aspect, so e.g. 2048×1536 gets ``(h/2, w/2)`` windows instead of ``(h/2, w/3)``.
    For multiples of ``base_px`` window, stride and jitter range equal the official ones (checked
    for every H, W in 1024..8192 at token maps H/8..H/64).
    Below ``base_px`` or for ``n = 1`` the window is the whole map (single window).
    """
    n = max(scale_numbers(H_px, W_px, base_px))
    return max(1, min(h, h // n)), max(1, min(w, w // n))


def _jitter_bounds(start: int, win: int, L: int, r: int) -> tuple[int, int]:
    """Jitter range for one window: first ``[−r, 0]``, interior ``[−r, r]``, last ``[0, r]``."""
    first, last = start == 0, start + win == L
    if first and last:
        return 0, 0
    if first:
        return -r, 0
    if last:
        return 0, r
    return -r, r


def get_views(
    h: int,
    w: int,
    H_px: int,
    W_px: int,
    *,
    base_px: int = BASE_PX,
    jitter: bool = True,
    generator: torch.Generator | None = None,
) -> WindowLayout:
    """Window layout with 50 % overlap and seeded jitter, FreeScale (Qiu et al., 2024).

    ``win`` from :func:`window_size`, ``stride = win // 2``, jitter range ``r = win // 8``; the
    map is zero-padded by ``r`` so all views are shifted by ``+r``. Each view draws its own
    ``(jitter_h, jitter_w)``. Deviation from the official code: its jitter (``get_views``,
    ``scale_attention.py:24-81``) uses unseeded Python ``random``; here it comes from ``generator``
    and is zero when ``jitter`` is False or ``generator`` is None. ``stride`` is clamped to ≥ 1
    (1-token windows would divide by zero).
    """
    win_h, win_w = window_size(h, w, H_px, W_px, base_px)
    stride_h, stride_w = max(1, win_h // 2), max(1, win_w // 2)
    r_h, r_w = win_h // 8, win_w // 8
    starts_h = tiling.starts(h, win_h, stride_h)
    starts_w = tiling.starts(w, win_w, stride_w)
    grid = [(hs, ws) for hs in starts_h for ws in starts_w]  # row-major

    bounds = torch.tensor(
        [_jitter_bounds(hs, win_h, h, r_h) + _jitter_bounds(ws, win_w, w, r_w) for hs, ws in grid],
        dtype=torch.float64,
    )  # (V, 4): lo_h, hi_h, lo_w, hi_w
    if jitter and generator is not None and (r_h > 0 or r_w > 0):
        # Uniform integers in [lo, hi] from one vectorised draw: lo + floor(u·(hi − lo + 1)).
        u = torch.rand(len(grid), 2, generator=generator, device=generator.device)
        u = u.to("cpu", torch.float64)
        lo, hi = bounds[:, 0::2], bounds[:, 1::2]
        jit = (lo + torch.floor(u * (hi - lo + 1)).clamp(max=hi - lo)).to(torch.int64).tolist()
    else:
        jit = [[0, 0]] * len(grid)

    views = tuple(
        (hs + jh + r_h, hs + jh + r_h + win_h, ws + jw + r_w, ws + jw + r_w + win_w)
        for (hs, ws), (jh, jw) in zip(grid, jit, strict=True)
    )
    return WindowLayout(h, w, win_h, win_w, stride_h, stride_w, r_h, r_w, views)


# ---------------------------------------------------------------------------------------------
# Local (windowed) and global / dilated self-attention
# ---------------------------------------------------------------------------------------------


def windowed_attention(
    X: torch.Tensor,
    layout: WindowLayout,
    attn: AttnFn,
    *,
    max_views_per_call: int | None = None,
) -> torch.Tensor:
    """Local self-attention ``L`` on overlapping windows, averaged over the overlaps.

    FreeScale (Qiu et al., 2024), official default mode (``scale_attention.py:138-175``): zero-pad the map by ``r``,
    run ``attn`` on every view, accumulate value/count, crop the padding, ``L = value/count``.
    All views have the same size, so they are stacked into the batch dimension and run in
    ``ceil(V / max_views_per_call)`` calls (``None`` = one call). Returns ``(B, N, C_out)``.
    """
    B, N, C = X.shape
    h, w, r_h, r_w = layout.h, layout.w, layout.r_h, layout.r_w
    win_h, win_w = layout.win_h, layout.win_w
    if N != h * w:
        raise ValueError(f"token count {N} != h*w = {h}*{w}")
    X_map = X.reshape(B, h, w, C)
    X_pad = torch.nn.functional.pad(X_map, (0, 0, r_w, r_w, r_h, r_h))  # (B, h+2r_h, w+2r_w, C)

    views = layout.views
    chunk = len(views) if not max_views_per_call else max(1, int(max_views_per_call))
    value: torch.Tensor | None = None
    count = X.new_zeros(h + 2 * r_h, w + 2 * r_w, 1)  # (h+2r_h, w+2r_w, 1), shared by B and C
    for c0 in range(0, len(views), chunk):
        part = views[c0 : c0 + chunk]
        tiles = torch.stack([X_pad[:, h0:h1, w0:w1] for h0, h1, w0, w1 in part])  # (V', B, wh, ww, C)
        out = attn(tiles.reshape(len(part) * B, win_h * win_w, C))  # (V'·B, wh·ww, C_out)
        out = out.reshape(len(part), B, win_h, win_w, out.shape[-1])
        if value is None:
            value = out.new_zeros(B, h + 2 * r_h, w + 2 * r_w, out.shape[-1])
        for k, (h0, h1, w0, w1) in enumerate(part):
            value[:, h0:h1, w0:w1] += out[k]
            count[h0:h1, w0:w1] += 1
    assert value is not None
    # Explicit end indices: the official ``[r:-r]`` crop (``scale_attention.py:138-175``) is empty (crash) when r = 0.
    value = value[:, r_h : r_h + h, r_w : r_w + w]  # (B, h, w, C_out)
    count = count[r_h : r_h + h, r_w : r_w + w].to(value.dtype)
    L = torch.where(count > 0, value / count.clamp(min=1), value)
    return L.reshape(B, N, -1)


def dilated_global_attention(
    X: torch.Tensor, h: int, w: int, attn: AttnFn, n_h: int, n_w: int
) -> torch.Tensor:
    """Fast-mode global part: attention over strided sub-grids, FreeScale (Qiu et al., 2024).

    For each offset ``(a, b)`` in ``n_h × n_w`` attend over the tokens ``[a::n_h, b::n_w]`` and
    scatter back (every token lies in exactly one sub-grid, so no averaging is needed).
    Sub-grids of equal shape are batched into one ``attn`` call; a map not divisible by
    ``(n_h, n_w)`` yields up to four shapes and is handled group by group (the official code
    assumes square, equal sub-grids; ``scale_attention.py:177-225``). ``n`` is clamped to ``[1, h]``/``[1, w]``. Returns
    ``(B, N, C_out)``.
    """
    B, N, C = X.shape
    if N != h * w:
        raise ValueError(f"token count {N} != h*w = {h}*{w}")
    n_h, n_w = min(max(1, n_h), h), min(max(1, n_w), w)
    X_map = X.reshape(B, h, w, C)
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for a in range(n_h):
        for b in range(n_w):
            shape = (len(range(a, h, n_h)), len(range(b, w, n_w)))
            groups.setdefault(shape, []).append((a, b))

    out_map: torch.Tensor | None = None
    for (sh, sw), offsets in groups.items():
        subs = torch.stack([X_map[:, a::n_h, b::n_w] for a, b in offsets])  # (G, B, sh, sw, C)
        out = attn(subs.reshape(len(offsets) * B, sh * sw, C))  # (G·B, sh·sw, C_out)
        out = out.reshape(len(offsets), B, sh, sw, out.shape[-1])
        if out_map is None:
            out_map = out.new_empty(B, h, w, out.shape[-1])
        for k, (a, b) in enumerate(offsets):
            out_map[:, a::n_h, b::n_w] = out[k]
    assert out_map is not None
    return out_map.reshape(B, N, -1)


# ---------------------------------------------------------------------------------------------
# 3-D Gaussian blur and Scale Fusion
# ---------------------------------------------------------------------------------------------


def gaussian_blur_3d(Y: torch.Tensor, kernel_size: int, sigma: float = 1.0, *, channels: bool = True) -> torch.Tensor:
    """Separable Gaussian over (h, w, **channels**) with zero padding, per batch element
    (``channels=False``: over (h, w) only).

    FreeScale (Qiu et al., 2024). The blur is 3-D: the official ``conv3d`` (``scale_attention.py:8-22``) with a
    ``K×K×K`` product kernel treats ``(h, w, C)`` as a volume. A product kernel with zero padding
    equals three 1-D passes, done here as shifted weighted sums (no permutes). Taps come from
    kornia's normalised 1-D Gaussian. ``Y`` is ``(B, h, w, C)``; computed in ≥ float32 and
    returned in ``Y.dtype``.
    """
    K = int(kernel_size)
    if K <= 1:
        return Y.clone()
    if K % 2 == 0:
        raise ValueError(f"kernel_size must be odd, got {K}")
    work = torch.promote_types(Y.dtype, torch.float32)
    taps = get_gaussian_kernel1d(K, float(sigma), dtype=torch.float64)[0].tolist()
    out = Y.to(work)
    p = K // 2
    for dim in (1, 2, 3) if channels else (1, 2):
        L = out.shape[dim]
        pad = [0, 0] * (out.dim() - dim)
        pad[-2:] = [p, p]  # F.pad order is last dim first; pad only ``dim``
        padded = torch.nn.functional.pad(out, pad)
        acc = torch.zeros_like(out)
        for k, t in enumerate(taps):
            acc.add_(padded.narrow(dim, k, L), alpha=t)
        out = acc
    return out.to(Y.dtype)


def scale_fusion(
    X: torch.Tensor,
    h: int,
    w: int,
    attn: AttnFn,
    target_hw: tuple[int, int],
    fast_mode: bool = False,
    generator: torch.Generator | None = None,
    *,
    jitter: bool = True,
    base_px: int = BASE_PX,
    sigma: float = 1.0,
    max_views_per_call: int | None = None,
) -> torch.Tensor:
    """Scale Fusion self-attention output ``blur(L) + G − blur(G)``, FreeScale (Qiu et al., 2024).

    Official ``scale_attention.py:83-286``. ``X`` ``(B, N, C)`` is the norm1 output over an ``h × w`` token map of a
    ``target_hw = (H_px, W_px)`` image; ``attn`` is the whole self-attention module incl. its
    output projection (the blur mixes channels, so fusion must happen after ``to_out``).
    ``L`` = windowed local attention (:func:`windowed_attention`), ``G`` = ``attn(X)`` over all
    tokens, or in ``fast_mode`` the dilated attention (:func:`dilated_global_attention`).
    Blur: 3-D Gaussian, ``K = 2·max(n_h, n_w) − 1``. Computed as ``G + blur(L − G)``, which is
    the same by linearity and needs one blur instead of two. Returns ``(B, N, C_out)``.
    With a single window spanning the map, ``L = G`` and the result is plain global attention.
    """
    B, N, C = X.shape
    H_px, W_px = int(target_hw[0]), int(target_hw[1])
    n_h, n_w = scale_numbers(H_px, W_px, base_px)
    layout = get_views(h, w, H_px, W_px, base_px=base_px, jitter=jitter, generator=generator)

    L = windowed_attention(X, layout, attn, max_views_per_call=max_views_per_call)  # (B, N, C_out)
    if fast_mode:
        G = dilated_global_attention(X, h, w, attn, n_h, n_w)  # (B, N, C_out)
    else:
        G = attn(X)  # (B, N, C_out)
    C_out = G.shape[-1]
    K = blur_kernel_size(n_h, n_w)
    detail = gaussian_blur_3d((L - G).reshape(B, h, w, C_out), K, sigma)  # (B, h, w, C_out)
    return G + detail.reshape(B, N, C_out)


QKVAttention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(q, k, v) -> out``: multi-head attention, ``q, k, v`` ``(B, heads, N, d)``, out ``(B, N, heads·d)``."""


def joint_scale_fusion(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attend: QKVAttention,
    prefix: int,
    h: int,
    w: int,
    target_hw: tuple[int, int],
    fast_mode: bool = False,
    generator: torch.Generator | None = None,
    *,
    jitter: bool = True,
    base_px: int = BASE_PX,
    sigma: float = 1.0,
) -> torch.Tensor:
    """Scale Fusion on a DiT's joint attention: the image tokens' output ``G + blur(L − G)``.

    The DiT counterpart of :func:`scale_fusion` (FreeScale, Qiu et al., 2024, §3.2; official
    ``scale_attention.py:83-286`` for UNets). ``q, k, v`` ``(B, heads, prefix + h·w, d)`` are the
    joint sequence after the rotary embedding: ``prefix`` text tokens first, then the ``h × w`` image
    tokens row-major (Flux, Qwen-Image). ``G`` = ``attend`` over all tokens (fast mode: over the text and
    each dilated sub-grid of the image, :func:`dilated_global_attention`); ``L`` = the overlap-averaged
    attention of each window of image tokens (the layout of :func:`get_views`) together with every
    text token, so each window still reads the whole prompt. The text tokens' output is ``G``'s (fast
    mode: its mean over the sub-grids). Returns ``(B, prefix + h·w, heads·d)``.

    Two departures from the UNet form, both forced by where a DiT's attention can be patched (before its
    output projection, with ``q, k, v`` already computed): the window border is zero-padded in ``q, k, v``
    (a UNet pads the hidden states, which its bias-free ``to_q/k/v`` map to the same zeros), and the blur
    is over (h, w) only: the heads' channels before the projection have no neighbourhood for the
    official blur's third axis to smooth. The spatial split itself is unchanged, since a per-token
    linear projection commutes with a spatial blur.
    """
    B, heads, N, d = q.shape
    if N != prefix + h * w:
        raise ValueError(f"token count {N} != prefix + h*w = {prefix} + {h}*{w}")
    H_px, W_px = int(target_hw[0]), int(target_hw[1])
    n_h, n_w = scale_numbers(H_px, W_px, base_px)
    layout = get_views(h, w, H_px, W_px, base_px=base_px, jitter=jitter, generator=generator)
    if len(layout.views) == 1 and not fast_mode:
        return attend(q, k, v)  # one window spanning the map: L = G

    def image_part(t: torch.Tensor) -> torch.Tensor:  # (B, heads, N, d) -> (B, h·w, heads·d)
        return t[:, :, prefix:].transpose(1, 2).reshape(B, h * w, heads * d)

    X = torch.cat([image_part(q), image_part(k), image_part(v)], dim=-1)  # (B, h·w, 3·heads·d)
    text = [t[:, :, :prefix] for t in (q, k, v)]
    text_out: list[torch.Tensor] = []

    def attend_with_text(tokens: torch.Tensor, keep_text: bool = False) -> torch.Tensor:
        """Image tokens ``(V·B, n, 3·heads·d)`` (view-major, as the window helpers stack them) with the text."""
        n = tokens.shape[1]
        reps = tokens.shape[0] // B
        qkv = [torch.cat([t.repeat(reps, 1, 1, 1), part.reshape(reps * B, n, heads, d).transpose(1, 2)], dim=2)
               for t, part in zip(text, tokens.chunk(3, dim=-1), strict=True)]
        out = attend(*qkv)  # (V·B, prefix + n, heads·d)
        if keep_text:
            text_out.append(out[:, :prefix].reshape(reps, B, prefix, -1).mean(0))
        return out[:, prefix:]

    L = windowed_attention(X, layout, attend_with_text)  # (B, h·w, heads·d)
    if fast_mode:
        G = dilated_global_attention(X, h, w, lambda t: attend_with_text(t, keep_text=True), n_h, n_w)
        G_text = torch.stack(text_out).mean(0) if prefix else G[:, :0]
    else:
        full = attend(q, k, v)
        G_text, G = full[:, :prefix], full[:, prefix:]
    K = blur_kernel_size(n_h, n_w)
    detail = gaussian_blur_3d((L - G).reshape(B, h, w, -1), K, sigma, channels=False)
    return torch.cat([G_text, G + detail.reshape(B, h * w, -1)], dim=1)


# ---------------------------------------------------------------------------------------------
# Restrained dilation and tailored self-cascade
# ---------------------------------------------------------------------------------------------


def dilation_factor(W_px: int, base_px: int = BASE_PX) -> int:
    """Restrained dilation ``d = W_px // 1024`` (width only, as the official code), at least 1.

    FreeScale (Qiu et al., 2024), ``pipeline_freescale.py:901-945``: 2 at 2048, 4 at 4096; padding is
    set to ``d`` as well.
    """
    return max(1, int(W_px) // base_px)


def restart_step(steps: int, fraction: float = 0.3) -> int:
    """First step of an upscaling stage, ``int(fraction·steps)`` (15 of 50; turbo 0.5).

    As the official ``pipeline_freescale.py:697-699``.
    """
    return int(fraction * steps)


def cosine_factor(t: float | torch.Tensor, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """``c(t) = ½·(1 + cos(π·(T − t)/T))`` on the 0..T−1 timestep scale, ``pipeline_freescale.py:897-899``."""
    t = torch.as_tensor(t, dtype=torch.float64)
    T = float(num_train_timesteps)
    return 0.5 * (1.0 + torch.cos(math.pi * (T - t) / T))


def mask_exponent(
    mask: torch.Tensor, cosine_scale: float, cosine_scale_bg: float = 1.0
) -> torch.Tensor:
    """Per-pixel exponent ``mask·cosine_scale + (1 − mask)·cosine_scale_bg``, ``pipeline_freescale_imgen.py:941-944``.

    The official mask is binary (pixel ≠ 0) resized nearest to the latent; soft masks
    interpolate the exponent linearly.
    """
    return mask * cosine_scale + (1 - mask) * cosine_scale_bg


def skip_residual_weight(
    t: float | torch.Tensor,
    scale: float | torch.Tensor,
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS,
) -> torch.Tensor:
    """``c1 = c(t)^scale``; ``scale`` may be a per-pixel tensor.

    FreeScale (Qiu et al., 2024), official ``pipeline_freescale.py:897-899`` and
    ``pipeline_freescale_imgen.py:941-944``. For cosine_scale 2: t 681 → 0.592, 581 → 0.392, 481 → 0.221.
    Returned in float64 for scalars, else in ``scale``'s floating dtype (the official imgen
    pipeline casts to fp16; we keep full precision).
    """
    c = cosine_factor(t, num_train_timesteps)
    if isinstance(scale, torch.Tensor):
        dtype = scale.dtype if scale.is_floating_point() else torch.float32
        return c.to(scale.device, dtype) ** scale.to(dtype)
    return c ** float(scale)


def skip_residual(x: torch.Tensor, N_i: torch.Tensor, c1: float | torch.Tensor) -> torch.Tensor:
    """Skip-residual blend ``x ← (1 − c1)·x + c1·N_i``, ``pipeline_freescale.py:897-899`` (returns a new tensor).

    ``N_i`` is the upsampled latent noised to step ``i``; ``c1`` a scalar or a tensor that
    broadcasts against ``x`` (e.g. ``(B, 1, H, W)`` from a mask).
    """
    if isinstance(c1, torch.Tensor):
        c1 = c1.to(x.device, x.dtype)
    return (1 - c1) * x + c1 * N_i


def dilation_active(
    sigma: float | torch.Tensor,
    sample_sigmas: torch.Tensor,
    dilate_percent: float,
) -> bool:
    """σ-schedule form of ``i < dilate_tau``, FreeScale (Qiu et al., 2024), ``pipeline_freescale.py:901-945``.

    ``sample_sigmas`` is the whole schedule of the sampling run (``steps + 1`` values, ending in
    0); ``dilate_percent`` the fraction of its steps that are dilated (``dilate_tau / steps``,
    0.7 = 35 of 50). The step index is not counted but read from σ: step ``i`` is dilated iff
    ``σ > σ_tau`` with ``tau = round(percent·steps)``. Intermediate σ of multistep solvers belong
    to the step whose interval holds them, and a restart (self-cascade starting at step 15) keeps
    absolute indices.
    """
    sig = torch.as_tensor(sample_sigmas).detach().flatten().to("cpu", torch.float64)
    steps = sig.numel() - 1
    tau = int(round(float(dilate_percent) * steps))
    if steps <= 0 or tau <= 0:
        return False
    if tau >= steps:
        return True
    return float(torch.as_tensor(sigma).max()) > float(sig[tau]) * (1.0 + 1e-5)


def region_exponent(
    mask: torch.Tensor,
    size: tuple[int, int],
    cosine_scale: float,
    cosine_scale_bg: float,
    batch: int,
) -> torch.Tensor:
    """Per-pixel skip-residual exponent from a region mask, FreeScale (Qiu et al., 2024).

    Region-aware detail control. ``mask`` ``(H, W)`` or ``(B_m, H, W)`` at any resolution is made
    binary (``mask ≠ 0``) and resized *nearest* to the latent ``size = (h, w)``, as the official imgen
    pipeline does (``pipeline_freescale_imgen.py:73-78, 917-923``), and turned
    into ``mask·cosine_scale + (1 − mask)·cosine_scale_bg``. Returns ``(batch, 1, h, w)``
    float32; a mask batch is cycled to ``batch``.
    """
    if mask.dim() == 2:
        mask = mask[None]
    if mask.dim() != 3:
        raise ValueError(f"mask must be (H, W) or (B, H, W), got shape {tuple(mask.shape)}")
    binary = (mask != 0).to(torch.float32)[:, None]  # (B_m, 1, H, W)
    binary = torch.nn.functional.interpolate(binary, size=tuple(int(s) for s in size), mode="nearest")
    index = torch.arange(batch) % binary.shape[0]
    return mask_exponent(binary[index], float(cosine_scale), float(cosine_scale_bg))


def upsample_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """RGB-space upsampling of the self-cascade, FreeScale (Qiu et al., 2024), ``pipeline_freescale.py:866-879``.

    Bicubic ``F.interpolate`` (no antialias, no clamp) of a ``(B, H, W, C)`` image to
    ``size = (H', W')``, computed in float32. Returns ``(B, H', W', C)``.
    """
    x = image.movedim(-1, 1).to(torch.float32)  # (B, C, H, W)
    x = torch.nn.functional.interpolate(x, size=tuple(int(s) for s in size), mode="bicubic", align_corners=False)
    return x.movedim(1, -1)


@torch.no_grad()
def sample_self_cascade(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict | None = None,
    callback: Callable[[dict], None] | None = None,
    disable: bool | None = None,
    *,
    x_up: torch.Tensor,
    noise: torch.Tensor,
    timesteps: list[float],
    restart_index: int,
    exponent: float | torch.Tensor,
    noised: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Tailored self-cascade upscaling stage, FreeScale (Qiu et al., 2024), paper Fig. 2(a).

    A k-diffusion sampler (``model(x, σ·s_in, **extra_args) -> x0``, callback dict with ``x``,
    ``i``, ``sigma``, ``sigma_hat``, ``denoised``), as ``pipeline_freescale.py:855-994`` of
    ali-vilab/FreeScale@d5a2256 runs it: starts at step ``r = restart_index`` from
    ``N_r = x_up + σ_r·n`` (so ``x``, the noised start a sampler is normally given, is not used)
    and for every step ``i ≥ r`` applies the skip residual ``x ← (1 − c1)·x + c1·(x_up + σ_i·n)``
    with ``c1 = c(t_i)^exponent`` (``exponent`` a scalar or a per-pixel ``(B|1, 1, H, W)`` tensor
    from :func:`region_exponent`), then one Euler step (= DDIM η = 0 in k-space).
    ``x_up``/``noise`` ``(B, C, H, W)`` in k-space; ``sigmas`` ``(S + 1,)`` the full schedule;
    ``timesteps[i]`` = ``t(σ_i)`` on the 0..999 scale. A callback that raises stops the run.
    ``noised(σ, n, x_up)`` is the model's noised latent ``N_i``: ``x_up + σ·n`` in k-space when None;
    ``(1 − σ)·x_up + σ·n`` for a rectified-flow model (SD3, Flux), whose Euler step is the same formula.
    Returns ``x`` after the last step.
    """
    if noised is None:
        def noised(sigma: torch.Tensor, n: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            return z + sigma * n

    extra_args = {} if extra_args is None else extra_args
    steps = len(sigmas) - 1
    if not 0 <= restart_index < steps:
        raise ValueError(f"restart index {restart_index} outside the {steps}-step schedule")
    s_in = x_up.new_ones([x_up.shape[0]])
    x = noised(sigmas[restart_index], noise, x_up)
    for i in range(restart_index, steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        c1 = skip_residual_weight(float(timesteps[i]), exponent)
        x = skip_residual(x, noised(sigma, noise, x_up), c1 if isinstance(c1, torch.Tensor) else float(c1))
        denoised = model(x, sigma * s_in, **extra_args)
        x = x + (x - denoised) / sigma * (sigma_next - sigma)  # Euler; σ_next = 0 gives x = denoised
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
    return x
