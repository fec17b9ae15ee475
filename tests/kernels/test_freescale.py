"""Tests for the FreeScale kernels (FreeScale, Qiu et al., 2024; official code ali-vilab/FreeScale@d5a2256)."""
from __future__ import annotations

import math

import pytest
import torch

from ultrares.kernels.freescale import (
    blur_kernel_size,
    cosine_factor,
    dilated_global_attention,
    dilation_factor,
    gaussian_blur_3d,
    get_views,
    joint_scale_fusion,
    mask_exponent,
    restart_step,
    scale_fusion,
    scale_numbers,
    skip_residual,
    skip_residual_weight,
    window_size,
    windowed_attention,
)
from ultrares.kernels.tiling import starts


def attn1(x: torch.Tensor) -> torch.Tensor:
    """Fake block attention used for the reference numbers: softmax(x·xᵀ/√C)·x, single head, no projections."""
    return torch.softmax(x @ x.transpose(-1, -2) / math.sqrt(x.shape[-1]), dim=-1) @ x


def make_X(h: int, w: int, C: int = 8) -> torch.Tensor:
    """X[0, n, c] = sin(0.013·n·(c+1) + 0.5·c), n row-major. Shape (1, h·w, C)."""
    n = torch.arange(h * w, dtype=torch.float64)[:, None]
    c = torch.arange(C, dtype=torch.float64)[None]
    return torch.sin(0.013 * n * (c + 1) + 0.5 * c)[None].float()


def close(got: float, ref: float, rel: float = 1e-4) -> bool:
    # 1e-4 relative, plus half a unit of the 6th printed decimal of the reference table.
    return abs(got - ref) <= rel * abs(ref) + 5e-7


# Reference numbers computed with the official ``scale_forward`` (``scale_attention.py``, jitter forced to 0).
# They report scale_forward(X) − X; with norm1 = identity, ff = 0 and no
# attn2 that difference is exactly the fused attn1 output that scale_fusion returns.
FUSION_TABLE = [
    (False, (2048, 2048), (32, 32), 0.005085, 0.155529, 41.66018, (-0.01371, 0.120948, 0.211316, 0.2344)),
    (False, (4096, 4096), (32, 32), 0.001304, 0.180561, 10.68541, (0.084096, 0.184746, 0.22759, 0.223305)),
    (False, (2048, 4096), (64, 128), -0.004508, 0.153639, -295.45267, (-0.019035, 0.092675, 0.170479, 0.19051)),
    (True, (2048, 2048), (32, 32), 0.005221, 0.162202, 42.76905, (-0.018263, 0.132102, 0.24678, 0.287147)),
    (True, (4096, 4096), (32, 32), 0.000709, 0.268771, 5.80697, (0.120468, 0.217658, 0.287803, 0.082727)),
    (True, (2048, 4096), (64, 128), -0.004499, 0.154307, -294.82382, (-0.015452, 0.065875, 0.170813, 0.193144)),
]


@pytest.mark.parametrize("fast,target,hw,mean,std,total,first", FUSION_TABLE)
def test_fusion_reference_table(fast, target, hw, mean, std, total, first):
    h, w = hw
    X = make_X(h, w)
    X0 = X.clone()
    out = scale_fusion(X, h, w, attn1, target, fast_mode=fast, jitter=False)
    assert out.shape == (1, h * w, 8)
    assert torch.equal(X, X0)  # input not mutated
    assert close(out.mean().item(), mean)
    assert close(out.std().item(), std)
    assert close(out.sum().item(), total)
    for got, ref in zip(out[0, 0, :4].tolist(), first):
        assert close(got, ref)


def test_blur_taps_and_delta():
    # 1-D taps via a delta along the channel axis only (h = w = 1 sees just the centre tap).
    for K, ref in [(3, [0.27407, 0.45186, 0.27407]), (7, [0.00443, 0.05401, 0.24204, 0.39905])]:
        d = torch.zeros(1, 1, 1, K)
        d[..., K // 2] = 1
        line = gaussian_blur_3d(d, K)[0, 0, 0]  # centre taps scaled by centre^2 along h, w
        c = line[K // 2].item() ** (1 / 3)
        taps = (line / c**2).tolist()
        assert taps[: len(ref)] == pytest.approx(ref, abs=1e-5)
    # Reference from the official 3-D blur (``scale_attention.py:8-22``):
    # unit delta at the centre of a 1×5×5×5 volume, K = 3, σ = 1.
    vol = torch.zeros(1, 5, 5, 5)
    vol[0, 2, 2, 2] = 1
    out = gaussian_blur_3d(vol, 3, 1.0)
    assert out[0, 2, 2].tolist() == pytest.approx([0, 0.05596, 0.09226, 0.05596, 0], abs=1e-5)
    assert out.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_blur_matches_conv3d_product_kernel():
    # Independent formulation of the official blur: one K×K×K kernel per batch element, conv3d.
    g = torch.Generator().manual_seed(0)
    Y = torch.randn(2, 6, 9, 7, generator=g, dtype=torch.float64)
    K = 5
    x = torch.arange(K, dtype=torch.float64) - (K - 1) / 2
    t = torch.exp(-(x**2) / 2)
    t = t / t.sum()
    k3 = (t[:, None, None] * t[None, :, None] * t[None, None, :])[None, None].repeat(2, 1, 1, 1, 1)
    ref = torch.nn.functional.conv3d(Y[None], k3, padding=K // 2, groups=2)[0]
    assert torch.allclose(gaussian_blur_3d(Y, K), ref, atol=1e-12)
    assert torch.equal(gaussian_blur_3d(Y, 1), Y)


def _official_count(L: int, win: int, stride: int) -> int:
    return int((L - win) / stride - 1e-6) + 2 if L > win else 1


@pytest.mark.parametrize(
    "target,hw,n_views,win,starts_h",
    [
        ((2048, 2048), (128, 128), 9, (64, 64), [0, 32, 64]),
        ((4096, 4096), (256, 256), 49, (64, 64), [0, 32, 64, 96, 128, 160, 192]),
        ((2048, 4096), (128, 256), 49, (32, 64), [0, 16, 32, 48, 64, 80, 96]),
        ((2048, 2048), (64, 64), 9, (32, 32), [0, 16, 32]),
        ((4096, 4096), (32, 32), 49, (8, 8), [0, 4, 8, 12, 16, 20, 24]),
    ],
)
def test_views_counts(target, hw, n_views, win, starts_h):
    lay = get_views(*hw, *target, jitter=False)
    assert len(lay.views) == n_views
    assert (lay.win_h, lay.win_w) == win
    assert (lay.r_h, lay.r_w) == (win[0] // 8, win[1] // 8)
    assert sorted({v[0] - lay.r_h for v in lay.views}) == starts_h
    assert all(v[1] - v[0] == win[0] and v[3] - v[2] == win[1] for v in lay.views)
    assert max(v[1] for v in lay.views) - lay.r_h == hw[0]  # last window ends at L


def test_views_count_formula_matches_official():
    for L in range(1, 140):
        for win in (1, 3, 8, 16, 31, 64):
            stride = max(1, win // 2)
            assert len(starts(L, win, stride)) == _official_count(L, win, stride)


def test_window_size_any_aspect():
    assert window_size(128, 96, 2048, 1536) == (64, 48)  # aspect kept, spans 1/max(n) of each axis
    assert window_size(96, 96, 1536, 1536) == (96, 96)  # n = 1: whole map
    assert window_size(80, 120, 640, 960) == (80, 120)  # below 1024 px
    assert window_size(64, 64, 1024, 1024, base_px=512) == (32, 32)  # turbo base
    assert scale_numbers(700, 3000) == (1, 2)
    assert blur_kernel_size(2, 2) == 3 and blur_kernel_size(4, 4) == 7 and blur_kernel_size(3, 1) == 5


def test_jitter_seeded_ranges_and_zero():
    h = w = 128
    lay0 = get_views(h, w, 2048, 2048, jitter=False)
    a = get_views(h, w, 2048, 2048, generator=torch.Generator().manual_seed(1))
    b = get_views(h, w, 2048, 2048, generator=torch.Generator().manual_seed(1))
    c = get_views(h, w, 2048, 2048, generator=torch.Generator().manual_seed(2))
    assert a.views == b.views and a.views != c.views
    assert get_views(h, w, 2048, 2048, generator=None).views == lay0.views
    assert get_views(h, w, 2048, 2048, jitter=False, generator=torch.Generator()).views == lay0.views
    r = lay0.r_h
    seen = set()
    for seed in range(40):
        lay = get_views(h, w, 2048, 2048, generator=torch.Generator().manual_seed(seed))
        for v, v0 in zip(lay.views, lay0.views):
            for j, s0 in ((v[0] - v0[0], v0[0] - r), (v[2] - v0[2], v0[2] - r)):
                lo, hi = (-r, 0) if s0 == 0 else (0, r) if s0 + 64 == h else (-r, r)
                assert lo <= j <= hi
                seen.add(j)
    assert seen == set(range(-r, r + 1))
    # single window along an axis: jitter is 0 even with a generator.
    one = get_views(24, 24, 1536, 1536, generator=torch.Generator().manual_seed(3))
    assert one.views == ((3, 27, 3, 27),)


def test_windowed_attention_pointwise_identity_and_chunking():
    # A token-wise "attention" must come back unchanged after overlap averaging, any jitter.
    X = torch.randn(2, 40 * 56, 5, generator=torch.Generator().manual_seed(0))
    lay = get_views(40, 56, 2048, 3072, generator=torch.Generator().manual_seed(5))
    L = windowed_attention(X, lay, lambda t: 2 * t)
    assert torch.allclose(L, 2 * X, atol=1e-6)
    L1 = windowed_attention(X, lay, attn1)
    L2 = windowed_attention(X, lay, attn1, max_views_per_call=4)
    assert torch.allclose(L1, L2, atol=1e-6)


def test_single_window_fusion_equals_global():
    for target, (h, w) in [((1536, 1536), (24, 24)), ((1024, 1024), (16, 16)), ((768, 1344), (12, 21))]:
        X = make_X(h, w)
        g = torch.Generator().manual_seed(0)
        for fast in (False, True):
            out = scale_fusion(X, h, w, attn1, target, fast_mode=fast, generator=g)
            assert torch.allclose(out, attn1(X), atol=1e-6)


def test_dilated_attention_non_divisible_matches_naive():
    h, w, n_h, n_w = 13, 10, 3, 4
    X = torch.randn(2, h * w, 6, generator=torch.Generator().manual_seed(0))
    calls: list[int] = []

    def counting(t: torch.Tensor) -> torch.Tensor:
        calls.append(t.shape[0])
        return attn1(t)

    out = dilated_global_attention(X, h, w, counting, n_h, n_w)
    Xm = X.reshape(2, h, w, 6)
    ref = torch.empty_like(Xm)
    for a in range(n_h):
        for b in range(n_w):
            sub = Xm[:, a::n_h, b::n_w]
            ref[:, a::n_h, b::n_w] = attn1(sub.reshape(2, -1, 6)).reshape(sub.shape)
    assert torch.allclose(out, ref.reshape(2, h * w, 6), atol=1e-6)
    assert len(calls) == 4 and sum(calls) == 2 * n_h * n_w  # grouped by sub-grid shape
    calls.clear()
    dilated_global_attention(X[:, : 12 * 8], 12, 8, counting, 3, 4)
    assert calls == [2 * 12]  # divisible: one batched call


def test_odd_maps_and_non_multiple_targets_run():
    g = torch.Generator().manual_seed(7)
    # 2048×1536 at SDXL level 2 (64×48) and a smaller map; level 1 (128×96) is too slow on CPU.
    cases = [((2048, 1536), (64, 48)), ((2048, 1536), (32, 24)),
             ((2900, 4100), (37, 53)), ((2048, 2048), (6, 6)), ((4096, 4096), (7, 5))]
    for target, (h, w) in cases:
        X = torch.randn(2, h * w, 4, generator=g)
        X0 = X.clone()
        for fast in (False, True):
            out = scale_fusion(X, h, w, attn1, target, fast_mode=fast, generator=g)
            assert out.shape == X.shape and torch.isfinite(out).all()
        assert torch.equal(X, X0)


def test_fusion_output_channels_may_differ():
    proj = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    X = make_X(32, 32)
    out = scale_fusion(X, 32, 32, lambda t: attn1(t) @ proj, (2048, 2048), fast_mode=True)
    assert out.shape == (1, 1024, 3)


@pytest.mark.parametrize(
    "t,c1", [(681, 0.592), (581, 0.392), (481, 0.221), (381, 0.101), (281, 0.033), (181, 0.006)]
)
def test_c1_schedule(t, c1):
    assert skip_residual_weight(t, 2.0).item() == pytest.approx(c1, abs=5e-4)
    assert skip_residual_weight(torch.tensor(float(t)), torch.tensor(2.0)).item() == pytest.approx(c1, abs=5e-4)


def test_dilation_and_steps():
    assert dilation_factor(2048) == 2 and dilation_factor(4096) == 4
    assert dilation_factor(1536) == 1 and dilation_factor(512) == 1
    r = restart_step(50)
    assert r == 15


def test_mask_exponent_per_pixel_and_blend():
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]])[None, None]  # (1, 1, 2, 2)
    s = mask_exponent(mask, 3.0, 0.5)
    c1 = skip_residual_weight(681, s)
    c = cosine_factor(681).item()
    assert c1.shape == (1, 1, 2, 2)
    assert c1.flatten().tolist() == pytest.approx([c**3, c**0.5, c**0.5, c**3], rel=1e-6)
    x, N = torch.zeros(1, 4, 2, 2), torch.ones(1, 4, 2, 2)
    x0 = x.clone()
    out = skip_residual(x, N, c1)
    assert torch.allclose(out, c1.expand(1, 4, 2, 2).float())
    assert torch.equal(x, x0)
    assert skip_residual(x, N, 0.25).mean().item() == pytest.approx(0.25)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Multi-head attention as a DiT calls it: (B, heads, N, d) in, (B, N, heads·d) out."""
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)


def joint_qkv(prefix: int, h: int, w: int, B: int = 2, heads: int = 2, d: int = 4):
    g = torch.Generator().manual_seed(3)
    return [torch.randn(B, heads, prefix + h * w, d, generator=g, dtype=torch.float64) for _ in range(3)]


def test_joint_fusion_is_global_attention_on_a_native_map():
    q, k, v = joint_qkv(prefix=3, h=8, w=8)
    assert torch.equal(joint_scale_fusion(q, k, v, sdpa, 3, 8, 8, (1024, 1024)), sdpa(q, k, v))


def test_joint_fusion_windows_keep_the_text_and_fuse_by_a_spatial_blur():
    """Every window of image tokens attends together with all text tokens; the text's own output is
    the global one; the image output is G + blur_hw(L − G), L the overlap average of the windows."""
    prefix, h, w = 3, 8, 8
    q, k, v = joint_qkv(prefix, h, w)
    out = joint_scale_fusion(q, k, v, sdpa, prefix, h, w, (2048, 2048), jitter=False)
    G = sdpa(q, k, v)
    layout = get_views(h, w, 2048, 2048, jitter=False)
    assert len(layout.views) == 9 and layout.r_h == 0  # 4 × 4 windows at stride 2, unpadded
    value, count = torch.zeros(2, h, w, 8, dtype=torch.float64), torch.zeros(h, w, 1, dtype=torch.float64)
    for h0, h1, w0, w1 in layout.views:
        rows = [prefix + r * w + c for r in range(h0, h1) for c in range(w0, w1)]
        index = list(range(prefix)) + rows
        window = sdpa(q[:, :, index], k[:, :, index], v[:, :, index])[:, prefix:]
        value[:, h0:h1, w0:w1] += window.reshape(2, h1 - h0, w1 - w0, 8)
        count[h0:h1, w0:w1] += 1
    L = (value / count).reshape(2, h * w, 8)
    G_img = G[:, prefix:]
    blurred = gaussian_blur_3d((L - G_img).reshape(2, h, w, 8), blur_kernel_size(2, 2), channels=False)
    assert torch.allclose(out[:, :prefix], G[:, :prefix])
    assert torch.allclose(out[:, prefix:], G_img + blurred.reshape(2, h * w, 8), atol=1e-12)
    assert (out[:, prefix:] - G_img).abs().max() > 1e-3  # the windows changed the image tokens


def test_joint_fusion_fast_mode_text_reads_every_sub_grid():
    prefix, h, w = 2, 8, 8
    q, k, v = joint_qkv(prefix, h, w)
    out = joint_scale_fusion(q, k, v, sdpa, prefix, h, w, (2048, 2048), fast_mode=True, jitter=False)
    subs = []
    for a in range(2):
        for b in range(2):
            rows = [prefix + r * w + c for r in range(a, h, 2) for c in range(b, w, 2)]
            index = list(range(prefix)) + rows
            subs.append(sdpa(q[:, :, index], k[:, :, index], v[:, :, index])[:, :prefix])
    assert torch.allclose(out[:, :prefix], torch.stack(subs).mean(0), atol=1e-12)
    assert out.shape == (2, prefix + h * w, 8) and torch.isfinite(out).all()


def test_joint_fusion_refuses_a_wrong_token_count():
    q, k, v = joint_qkv(prefix=3, h=8, w=8)
    with pytest.raises(ValueError, match="token count"):
        joint_scale_fusion(q, k, v, sdpa, 2, 8, 8, (2048, 2048))
