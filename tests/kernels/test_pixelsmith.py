"""Pixelsmith kernels: reference numbers and the patch scheduler's invariants.

Reference numbers were computed with the formulas of the official code, Thanos-DB/Pixelsmith@28c992b
``pixelsmith_pipeline.py``.
"""
from __future__ import annotations

import math

import pytest
import torch

from ultrares.kernels.pixelsmith import sample_pixelsmith, start_latent
from ultrares.kernels.pixelsmith_ops import (
    averaging_band,
    chessboard_mask,
    draw_chessboard_coins,
    guidance_patch,
    patch_box_at,
    phase_fusion,
    revert,
    round_grid,
    select_patches,
    write_back,
)
from ultrares.kernels.tiling import PatchBox


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def run_pixelsmith(denoise, z_up, noise, sigmas, slider, **kwargs):
    """``sample_pixelsmith`` from its usual start ``G[0] = z_up + σ_0·n`` (a ``(y, sigma, boxes)`` denoiser)."""
    x = start_latent(z_up, noise, float(sigmas[0])) if noise.shape == z_up.shape else z_up
    return sample_pixelsmith(denoise, x, sigmas, z_up=z_up, noise=noise, slider=slider, **kwargs)


def sdxl_alphas_cumprod() -> torch.Tensor:
    """SD/SDXL ā: scaled-linear betas 0.00085 -> 0.012 over 1000 steps (float64)."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def ddim_uniform_sigmas(steps: int) -> torch.Tensor:
    """ComfyUI ``ddim_uniform`` on the SDXL sigmas: T = 981, 961, ..., 1, then 0.

    As Comfy-Org/ComfyUI@a125cd8 ``comfy/samplers.py:422-437``.
    """
    a = sdxl_alphas_cumprod()
    sigmas = ((1 - a) / a).sqrt()
    stride = max(len(sigmas) // steps, 1)
    picked = [float(sigmas[t]) for t in range(1, len(sigmas), stride)]
    return torch.tensor(picked[::-1] + [0.0])


def fusion_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    c = torch.arange(4.0).view(1, 4, 1, 1)
    h = torch.arange(128.0).view(1, 1, 128, 1)
    w = torch.arange(128.0).view(1, 1, 1, 128)
    z = torch.sin(0.1 * h + 0.2 * w + c) + 0.1 * c
    g = torch.cos(0.05 * h - 0.3 * w + 0.5 * c)
    return z, g


def euler_full(x0_field: torch.Tensor, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Plain full-latent Euler run with a fixed x0 prediction."""
    for s, s_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        x = x0_field.clone() if s_next == 0 else x + (s_next - s) / s * (x - x0_field)
    return x


def field_denoiser(x0_field: torch.Tensor, calls: list | None = None):
    """``denoise`` that returns a fixed x0 field sliced by box (patch-major over the batch)."""

    def denoise(y, sigma, boxes):
        if calls is not None:
            calls.append((float(sigma[0]), list(boxes), y.clone()))
        parts = [x0_field[..., r, c] for r, c in (b.slices for b in boxes)]  # each (B, C, h, w)
        return torch.cat(parts).to(y)

    return denoise


# ------------------------------------------------------------------------------------------ #
# Phase fusion: reference numbers computed with the official formula (``pixelsmith_pipeline.py:1772-1787``)
# ------------------------------------------------------------------------------------------ #


def test_phase_fusion_reference_numbers():
    z, g = fusion_inputs()
    out = phase_fusion(z, g)
    assert out.shape == z.shape and out.dtype == torch.float32
    assert out.mean().item() == pytest.approx(0.150155, rel=1e-4)
    assert out.std().item() == pytest.approx(0.715867, rel=1e-4)
    assert out.sum().item() == pytest.approx(9840.571, rel=1e-4)
    ref = torch.tensor([0.758229, 0.77922, 0.757759, 0.697038])
    torch.testing.assert_close(out[0, 0, 0, :4], ref, rtol=1e-4, atol=1e-5)


def test_phase_fusion_identity_dtype_and_odd_sizes():
    z, _ = fusion_inputs()
    assert (phase_fusion(z, z) - z).abs().max() < 5e-6
    # fp16 in -> fp16 out, computed in fp32.
    z16, g16 = (t.half() for t in fusion_inputs())
    out16 = phase_fusion(z16, g16)
    assert out16.dtype == torch.float16
    torch.testing.assert_close(out16.float(), phase_fusion(z16.float(), g16.float()),
                               rtol=0, atol=2e-3)
    # Odd width/height round-trip (irfft2 needs the explicit size).
    zo = torch.randn(2, 3, 17, 23, generator=gen(1))
    assert phase_fusion(zo, zo).shape == zo.shape
    torch.testing.assert_close(phase_fusion(zo, zo), zo, atol=1e-5, rtol=0)
    with pytest.raises(ValueError):
        phase_fusion(zo, zo[..., :-1])


def test_phase_fusion_keeps_amplitude():
    z, g = fusion_inputs()
    out = phase_fusion(z, g)
    amp_in = torch.fft.rfft2(z, norm="ortho").abs()
    amp_out = torch.fft.rfft2(out, norm="ortho").abs()
    # The DC and Nyquist columns are re-symmetrised by irfft2 (a real output), so only the
    # interior columns keep |Y| exactly.
    torch.testing.assert_close(amp_out[..., 1:-1], amp_in[..., 1:-1], atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------------ #
# Chessboard: both phases of the official mask (``pixelsmith_pipeline.py:1793-1801``)
# ------------------------------------------------------------------------------------------ #


def test_chessboard_table():
    expected = {(0, 0): 1, (1, 0): 0, (0, 1): 0, (1, 1): 1}
    masks = {}
    for (sd, sl), top_left in expected.items():
        M = chessboard_mask(128, 128, sd, sl)
        assert M.shape == (1, 128, 128) and M.dtype == torch.bool
        assert int(M[0, 0, 0]) == top_left
        masks[(sd, sl)] = M
    assert torch.equal(masks[(1, 1)], masks[(0, 0)])
    M = masks[(0, 0)][0]
    # 1×1 cells: neighbours alternate, diagonal equal, exactly half set.
    assert M[0, 1] != M[0, 0] and M[1, 0] != M[0, 0] and M[1, 1] == M[0, 0]
    assert int(M.sum()) == 128 * 128 // 2
    # Rolling by one in both axes gives the same phase back.
    assert torch.equal(torch.roll(M, (1, 1), (0, 1)), M)


def test_chessboard_batched_and_offset():
    sd, sl = torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1])
    M = chessboard_mask(8, 6, sd, sl)
    assert M.shape == (3, 8, 6)
    assert [int(M[i, 0, 0]) for i in range(3)] == [1, 0, 1]
    shifted = chessboard_mask(8, 6, 0, 0, offset=(3, 4))
    assert int(shifted[0, 0, 0]) == 0 and torch.equal(shifted, ~chessboard_mask(8, 6, 0, 0))


def test_chessboard_coins_seeded_and_fair():
    sd, sl = draw_chessboard_coins(4000, gen(3))
    sd2, sl2 = draw_chessboard_coins(4000, gen(3))
    assert torch.equal(sd, sd2) and torch.equal(sl, sl2)
    assert set(sd.tolist()) == {0, 1} and set(sl.tolist()) == {0, 1}
    assert abs(sd.float().mean().item() - 0.5) < 0.05
    assert abs(((sd + sl) % 2).float().mean().item() - 0.5) < 0.05


# ------------------------------------------------------------------------------------------ #
# Averaging band, revert, write-back (official ``pixelsmith_pipeline.py:1919-1930``)
# ------------------------------------------------------------------------------------------ #


def test_band_left_half_is_columns_64_to_73():
    m = torch.zeros(128, 128, dtype=torch.bool)
    m[:, :64] = True
    B = averaging_band(m, 10)
    cols = torch.nonzero(B.any(0)).reshape(-1).tolist()
    assert cols == list(range(64, 74))
    assert B[:, 64:74].all() and int(B.sum()) == 128 * 10


def test_band_top_left_is_l_shape():
    m = torch.zeros(1, 1, 128, 128, dtype=torch.bool)
    m[..., :64, :64] = True
    B = averaging_band(m, 10)[0, 0]
    r = torch.arange(128).view(-1, 1)
    c = torch.arange(128).view(1, -1)
    expected = (r < 74) & (c < 74) & ~((r < 64) & (c < 64))  # Chebyshev distance <= 10
    assert torch.equal(B, expected)
    assert B[73, 73] and not B[74, 73] and not B[73, 74]


def test_band_edge_cases():
    m = torch.zeros(16, 16, dtype=torch.bool)
    m[:, :8] = True
    assert not averaging_band(m, 0).any()
    assert not averaging_band(torch.ones(16, 16, dtype=torch.bool), 10).any()
    assert not averaging_band(torch.zeros(16, 16, dtype=torch.bool), 10).any()
    with pytest.raises(ValueError):
        averaging_band(m, -1)


def test_revert_and_write_back():
    m = torch.zeros(1, 1, 32, 32, dtype=torch.bool)
    m[..., :, :16] = True
    y, y_prev = torch.full((1, 2, 32, 32), 5.0), torch.full((1, 2, 32, 32), 1.0)
    r = revert(y, y_prev, m)
    assert (r[..., :16] == 5).all() and (r[..., 16:] == 1).all()
    x_patch, y_next = torch.full((1, 2, 32, 32), 2.0), torch.full((1, 2, 32, 32), 4.0)
    out = write_back(x_patch, y_next, m, band=3)
    assert (out[..., :16] == 4).all()  # m = 1: y'
    assert (out[..., 16:19] == 3).all()  # band: (y' + x) / 2
    assert (out[..., 19:] == 2).all()  # outside: untouched
    assert (x_patch == 2).all() and (y_next == 4).all()  # inputs not mutated


def test_guidance_patch_closed_form():
    z_up = torch.randn(1, 4, 20, 30, generator=gen(0))
    n = torch.randn(1, 4, 20, 30, generator=gen(1))
    box = PatchBox(3, 7, 10, 12)
    G = guidance_patch(z_up, n, 2.5, box)
    assert G.shape == (1, 4, 10, 12)
    torch.testing.assert_close(G, (z_up + 2.5 * n)[..., 3:13, 7:19])


# ------------------------------------------------------------------------------------------ #
# Patch selection
# ------------------------------------------------------------------------------------------ #


def test_patch_box_at_clamps_and_contains_pixel():
    for row, col in [(0, 0), (5, 70), (99, 99), (50, 3), (31, 64)]:
        box = patch_box_at(row, col, (100, 100), (32, 32))
        assert 0 <= box.top <= 68 and 0 <= box.left <= 68
        assert box.top <= row < box.top + 32 and box.left <= col < box.left + 32
    assert patch_box_at(50, 50, (100, 100), (32, 32)) == PatchBox(34, 34, 32, 32)


def test_select_patches_furthest_behind_and_non_overlapping():
    tau = torch.ones(64, 80, dtype=torch.int32)
    tau[10:30, 40:60] = 0  # the only pixels furthest behind
    g = gen(7)
    for _ in range(20):
        (box,) = select_patches(tau, 0, (16, 16), 1, g)
        r, c = box.slices
        assert (tau[r, c] == 0).any()
    tau = torch.zeros(64, 80, dtype=torch.int32)
    boxes = select_patches(tau, 0, (16, 16), 50, gen(8))
    assert 1 < len(boxes) <= 20  # at most 4 × 5 disjoint 16² windows fit
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert abs(a.top - b.top) >= 16 or abs(a.left - b.left) >= 16


def test_select_patches_uniform_over_few_eligible():
    # Only 3 eligible pixels among 4096: exercises the exact fallback; all three must be hit.
    tau = torch.ones(64, 64, dtype=torch.int32)
    for r, c in [(0, 0), (63, 63), (0, 63)]:
        tau[r, c] = 0
    g = gen(9)
    seen = {select_patches(tau, 0, (8, 8), 1, g)[0] for _ in range(60)}
    assert seen == {PatchBox(0, 0, 8, 8), PatchBox(56, 56, 8, 8), PatchBox(0, 56, 8, 8)}


# ------------------------------------------------------------------------------------------ #
# Scheduler invariants with a fake (counting) denoiser
# ------------------------------------------------------------------------------------------ #


def run_counting(shape, sigmas, mode, patch=16, band=3, patch_batch=4, seed=0):
    """Run with z_up = n = 0 and a denoiser whose Euler step adds exactly +1 per update.

    Then x must equal the step-index map τ at all times; inside ``denoise`` the whole (reverted)
    patch must hold the value k.
    """
    z = torch.zeros(shape)
    sig = sigmas.tolist()
    index = {s: k for k, s in enumerate(sig[:-1])}
    log = {"calls": 0, "patches": 0, "snapshots": 0, "per_call": [], "infos": []}

    def denoise(y, sigma, boxes):
        s = float(sigma[0])
        k = index[s]
        assert (sigma == sigma[0]).all()
        assert torch.allclose(y, torch.full_like(y, float(k)), atol=1e-4), "patch not at step k"
        log["calls"] += 1
        log["patches"] += len(boxes)
        log["per_call"].append(len(boxes))
        s_next = sig[k + 1]
        return y + 1.0 if s_next == 0 else y - s / (s_next - s)  # Euler: y' = y + 1

    def callback(info):
        tau, x = info["tau"], info["x"]
        assert torch.allclose(x, tau.float().expand_as(x), atol=1e-4), "x != update count"
        assert int(tau.max() - tau.min()) <= 1
        if int(tau.max()) == int(tau.min()):
            log["snapshots"] += 1
        log["infos"].append({k: info[k] for k in ("patches", "progress")})

    out = run_pixelsmith(denoise, z, z, sigmas, slider=0, generator=gen(seed),
                            patch_size=patch, band=band, mode=mode, patch_batch=patch_batch,
                            callback=callback)
    return out, log


@pytest.mark.parametrize("mode", ["faithful", "fast"])
def test_every_pixel_exactly_one_update_per_step(mode):
    sigmas = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.5, 0.0])
    N = len(sigmas) - 1
    out, log = run_counting((1, 2, 40, 56), sigmas, mode)
    assert torch.allclose(out, torch.full_like(out, float(N)), atol=1e-4)
    assert log["snapshots"] == N  # one snapshot per round
    assert log["patches"] >= N * math.ceil(40 / 16) * math.ceil(56 / 16)
    if mode == "fast":
        assert max(log["per_call"]) > 1 and log["calls"] < log["patches"]
    else:
        assert set(log["per_call"]) == {1}
    last = log["infos"][-1]
    assert last["patches"] == log["patches"] and last["progress"] == 1.0
    progress = [i["progress"] for i in log["infos"]]
    assert progress == sorted(progress)


@pytest.mark.parametrize("mode", ["faithful", "fast"])
def test_single_window_latent_takes_one_patch_per_round(mode):
    sigmas = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.0])
    _, log = run_counting((1, 4, 128, 128), sigmas, mode, patch=128, band=10)
    assert log["patches"] == 4 and log["calls"] == 4 and log["snapshots"] == 4


def test_fast_mode_boxes_disjoint_and_furthest_behind():
    sigmas = torch.tensor([8.0, 4.0, 2.0, 0.0])
    z_up = torch.randn(1, 4, 48, 64, generator=gen(0))
    n = torch.randn(1, 4, 48, 64, generator=gen(1))
    state = {"tau": torch.zeros(48, 64, dtype=torch.int32)}
    sig = sigmas.tolist()

    def denoise(y, sigma, boxes):
        k = sig.index(float(sigma[0]))
        tau = state["tau"]
        assert k == int(tau.min())
        assert y.shape[0] == len(boxes) <= 3
        for i, a in enumerate(boxes):
            assert (tau[a.slices] == k).any()
            for b in boxes[i + 1:]:
                assert abs(a.top - b.top) >= 16 or abs(a.left - b.left) >= 16
        return 0.9 * y

    def callback(info):
        state["tau"] = info["tau"].clone()

    run_pixelsmith(denoise, z_up, n, sigmas, slider=2, generator=gen(2), patch_size=16,
                      band=4, mode="fast", patch_batch=3, callback=callback)


@pytest.mark.parametrize("hw", [(64, 64), (40, 52), (16, 30), (200, 72)])
def test_round_grid_covers_every_pixel_and_moves_every_round(hw):
    """Every pixel is covered by abutting windows (one more row / column than a tiling at most),
    and the grid's offset is drawn anew, so window borders do not repeat from round to round."""
    layouts = set()
    for seed in range(6):
        boxes = round_grid(hw, (16, 16), gen(seed))
        cover = torch.zeros(hw, dtype=torch.int32)
        for b in boxes:
            assert b.top >= 0 and b.left >= 0 and b.top + 16 <= hw[0] and b.left + 16 <= hw[1]
            cover[b.slices] += 1
        assert (cover > 0).all()
        tops, lefts = sorted({b.top for b in boxes}), sorted({b.left for b in boxes})
        rows, cols = -(-hw[0] // 16), -(-hw[1] // 16)
        assert len(tops) <= rows + 1 and len(lefts) <= cols + 1 and len(boxes) == len(tops) * len(lefts)
        layouts.add((tuple(tops), tuple(lefts)))
    if max(hw) > 32:
        assert len(layouts) > 1, "the offset is drawn anew"


@pytest.mark.parametrize("mode", ["fast", "faithful"])
def test_no_window_border_stays_on_a_fixed_grid_line(mode):
    """A denoiser that paints each window one flat colour makes every window border a visible step.

    The final image then shows where the last windows met. In ``fast`` mode those borders must
    not pile up on the lines of a fixed grid (multiples of P, or P from a side): the jump across
    those lines is compared with the mean jump across all columns and rows. (The aligned grid
    of the earlier ``fast`` rounds put every other round's borders exactly there.)
    """
    P, L = 16, 96
    sigmas = torch.linspace(4.0, 0.0, 5)
    ratios = []
    for seed in range(6):
        colours = gen(100 + seed)

        def denoise(y, sigma, boxes, colours=colours):
            flat = torch.rand(y.shape[0], 1, 1, 1, generator=colours)
            return flat.expand_as(y).clone()

        z = torch.zeros(1, 1, L, L)
        out = run_pixelsmith(denoise, z, z, sigmas, slider=0, generator=gen(seed), patch_size=P, band=2,
                             mode=mode, patch_batch=4)[0, 0]
        cols = (out[:, 1:] - out[:, :-1]).abs().mean(0)
        rows = (out[1:, :] - out[:-1, :]).abs().mean(1)
        lines = [i * P - 1 for i in range(1, L // P)]
        ratios.append(float((cols[lines].mean() + rows[lines].mean()) / (cols.mean() + rows.mean())))
    mean_ratio = sum(ratios) / len(ratios)
    if mode == "fast":  # ≈ 0.25 (the alternating aligned grid of earlier builds: ≈ 2.0)
        assert mean_ratio < 1.0, ratios
    else:  # the official random centres (≈ 1.7): windows clamped at the sides end on the grid's lines
        assert mean_ratio < 2.0, ratios


def test_fast_mode_needs_fewer_windows_than_faithful():
    sigmas = torch.linspace(8.0, 0.0, 9)
    counts = {}
    for mode in ("faithful", "fast"):
        _, log = run_counting((1, 4, 128, 128), sigmas, mode, patch=32, band=4)
        counts[mode] = log["patches"]
    # A 4×4 tiling shifted by a random offset: 5×5 windows (4×4 when the offset is 0), 8 rounds.
    assert 8 * 16 <= counts["fast"] <= 8 * 25
    assert counts["fast"] < 0.75 * counts["faithful"], counts  # ≈ 0.5 on big latents (more cells per side)


# ------------------------------------------------------------------------------------------ #
# Equivalence, determinism, purity, stopping
# ------------------------------------------------------------------------------------------ #


@pytest.mark.parametrize("mode,batch", [("faithful", 1), ("fast", 1), ("fast", 2)])
def test_slider_zero_equals_full_latent_euler(mode, batch):
    sigmas = torch.tensor([10.0, 5.0, 2.5, 1.2, 0.4, 0.0])
    shape = (batch, 4, 40, 52)
    z_up = torch.randn(shape, generator=gen(0))
    n = torch.randn(shape, generator=gen(1))
    x0_field = torch.randn(shape, generator=gen(2))
    calls: list = []
    out = run_pixelsmith(field_denoiser(x0_field, calls), z_up, n, sigmas, slider=0,
                            generator=gen(3), patch_size=16, band=5, mode=mode, patch_batch=4)
    # Unguided start is G[0] = z_up + σ_0 n.
    first_box = calls[0][1][0]
    torch.testing.assert_close(calls[0][2][:batch], (z_up + 10.0 * n)[..., first_box.slices[0],
                                                                      first_box.slices[1]])
    torch.testing.assert_close(out, x0_field, atol=1e-6, rtol=0)  # ends at σ = 0: x0
    # Stop before σ = 0 to compare intermediate Euler values too.
    out_mid = run_pixelsmith(field_denoiser(x0_field), z_up, n, sigmas[:-1], slider=0,
                                generator=gen(3), patch_size=16, band=5, mode=mode)
    ref = euler_full(x0_field, z_up + 10.0 * n, sigmas[:-1])
    torch.testing.assert_close(out_mid, ref, atol=1e-5, rtol=1e-5)


def test_same_seed_same_output_and_inputs_untouched():
    sigmas = torch.tensor([6.0, 3.0, 1.5, 0.5, 0.0])
    z_up = torch.randn(1, 4, 40, 40, generator=gen(0))
    n = torch.randn(1, 4, 40, 40, generator=gen(1))
    copies = (z_up.clone(), n.clone(), sigmas.clone())

    def denoise(y, sigma, boxes):
        return torch.tanh(y) * 0.5 + 0.01 * boxes[0].top

    def run(seed):
        boxes: list = []
        out = run_pixelsmith(denoise, z_up, n, sigmas, slider=3, generator=gen(seed),
                                patch_size=16, band=4,
                                callback=lambda info: boxes.extend(info["boxes"]))
        return out, boxes

    a, boxes_a = run(11)
    b, boxes_b = run(11)
    _, boxes_c = run(12)
    assert torch.equal(a, b) and boxes_a == boxes_b
    assert boxes_a != boxes_c
    for orig, now in zip(copies, (z_up, n, sigmas)):
        assert torch.equal(orig, now)
    assert a.data_ptr() not in (z_up.data_ptr(), n.data_ptr())


def test_slider_semantics_fusion_below_s_chessboard_below_s_minus_1():
    sigmas = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.5, 0.0])
    S = 3
    z_up = torch.randn(1, 4, 32, 32, generator=gen(0))
    n = torch.randn(1, 4, 32, 32, generator=gen(1))
    sig = sigmas.tolist()
    seen: list = []  # (k, y sent to denoise, x before the step)
    state = {"x": z_up + sig[0] * n}

    def denoise(y, sigma, boxes):
        seen.append((sig.index(float(sigma[0])), y.clone(), state["x"].clone()))
        return 0.5 * y

    def callback(info):
        k = info["i"]  # single window: one patch per round
        x = info["x"]
        G_next = z_up + sig[k + 1] * n
        plain = seen[-1][1] + (sig[k + 1] - sig[k]) / sig[k] * (seen[-1][1] - 0.5 * seen[-1][1])
        if sig[k + 1] == 0:
            plain = 0.5 * seen[-1][1]
        on_G = torch.isclose(x, G_next, atol=1e-6)
        if k < S - 1:
            # Exactly one checkerboard phase replaced by G[k+1], the rest is the Euler step.
            M = on_G[0, 0]
            assert int(M.sum()) == 32 * 32 // 2 and (M ^ torch.roll(M, 1, 1)).all()
            torch.testing.assert_close(x[~on_G], plain[~on_G])
        else:
            assert not on_G.any()
            torch.testing.assert_close(x, plain)
        state["x"] = x.clone()

    run_pixelsmith(denoise, z_up, n, sigmas, slider=S, generator=gen(5), patch_size=32,
                      callback=callback)
    assert [k for k, _, _ in seen] == [0, 1, 2, 3, 4]
    for k, y, x_before in seen:
        if k < S:
            torch.testing.assert_close(y, phase_fusion(x_before, z_up + sig[k] * n))
        else:
            torch.testing.assert_close(y, x_before)


def test_raising_callback_stops_within_one_patch():
    """Interruption is the k-diffusion way: the callback raises, no further model call is made."""
    sigmas = torch.tensor([6.0, 3.0, 1.0, 0.0])
    z = torch.randn(1, 4, 48, 48, generator=gen(0))
    calls = {"n": 0}

    def denoise(y, sigma, boxes):
        calls["n"] += 1
        return y * 0.5

    class Stop(Exception):
        pass

    def callback(info):
        if calls["n"] >= 3:
            raise Stop

    for mode in ("faithful", "fast"):
        calls["n"] = 0
        with pytest.raises(Stop):
            run_pixelsmith(denoise, z, z, sigmas, 2, generator=gen(0), patch_size=16, mode=mode, callback=callback)
        assert calls["n"] == 3


def test_patch_clamped_to_small_latent():
    sigmas = torch.tensor([4.0, 1.0, 0.0])
    z_up = torch.randn(1, 4, 20, 48, generator=gen(0))
    shapes: set = set()

    def denoise(y, sigma, boxes):
        shapes.add(tuple(y.shape[-2:]))
        assert all(b.height == 20 and b.width == 32 and b.top == 0 for b in boxes)
        return y * 0.3

    run_pixelsmith(denoise, z_up, z_up, sigmas, 1, generator=gen(0), patch_size=32)
    assert shapes == {(20, 32)}


def test_argument_validation():
    z = torch.zeros(1, 4, 16, 16)
    f = field_denoiser(z)
    s = torch.tensor([1.0, 0.0])
    with pytest.raises(ValueError):
        run_pixelsmith(f, z, z[..., :8], s, 0, generator=gen())
    with pytest.raises(ValueError):
        run_pixelsmith(f, z, z, s, 0, generator=gen(), mode="grid")
    with pytest.raises(ValueError):
        run_pixelsmith(f, z, z, s, -1, generator=gen())
    with pytest.raises(ValueError):
        run_pixelsmith(f, z, z, s[:1], 0, generator=gen())
    with pytest.raises(ValueError):
        run_pixelsmith(f, z, z, s, 0, generator=gen(), patch_size=0)
    with pytest.raises(ValueError):
        run_pixelsmith(f, z, z, torch.tensor([1.0, 0.0, 0.0]), 0, generator=gen())
    # slider > N is clamped: runs.
    run_pixelsmith(f, z, z, s, 50, generator=gen(), patch_size=16)


# ------------------------------------------------------------------------------------------ #
# ComfyUI sigmas for the official DDIM timesteps (reference ā and σ of the SDXL scaled-linear schedule)
# ------------------------------------------------------------------------------------------ #


def test_sdxl_ddim_table_and_ddim_uniform_sigmas():
    a = sdxl_alphas_cumprod()
    sigma = ((1 - a) / a).sqrt()
    for t, a_ref, s_ref in [(981, 0.005776, 13.1204), (681, 0.094637, 3.0930),
                            (1, 0.998296, 0.0413)]:
        assert float(a[t]) == pytest.approx(a_ref, abs=2e-6)
        assert float(sigma[t]) == pytest.approx(s_ref, abs=1e-4)
    sigmas = ddim_uniform_sigmas(50)
    assert len(sigmas) == 51 and float(sigmas[-1]) == 0.0
    assert float(sigmas[0]) == pytest.approx(13.1204, abs=1e-4)
    assert float(sigmas[15]) == pytest.approx(3.0930, abs=1e-4)  # T[15] = 981 - 15·20 = 681
    assert float(sigmas[-2]) == pytest.approx(0.0413, abs=1e-4)


def test_sampler_on_ddim_uniform_schedule():
    sigmas = ddim_uniform_sigmas(50)
    shape = (1, 4, 24, 24)
    z_up = torch.randn(shape, generator=gen(0))
    x0_field = torch.randn(shape, generator=gen(1))
    out, log = run_counting(shape, sigmas, "fast", patch=16, band=3)
    assert torch.allclose(out, torch.full_like(out, 50.0), atol=1e-3)
    assert log["snapshots"] == 50
    out = run_pixelsmith(field_denoiser(x0_field), z_up, z_up, sigmas, slider=20,
                            generator=gen(2), patch_size=16, band=3, mode="fast", patch_batch=4)
    torch.testing.assert_close(out, x0_field)  # last step (σ = 0.0413 -> 0) returns x0


def test_auto_slider_follows_the_papers_readme():
    from ultrares.kernels.pixelsmith import auto_slider

    assert auto_slider(50, (256, 256), 128) == 20, "SDXL 1024² → 2048²: slider 20 of 50"
    assert auto_slider(50, (512, 512), 128) == 30, "→ 4096²: slider 30 of 50"
    assert auto_slider(20, (256, 192), 128) == 8, "the same share of fewer steps"
    assert auto_slider(50, (4096, 4096), 128) == 30
