"""Self-cascade and dilation-schedule kernels of FreeScale (Qiu et al., 2024).

Checked against the official code, ali-vilab/FreeScale@d5a2256 ``pipeline_freescale.py`` and
``pipeline_freescale_imgen.py``.
"""
from __future__ import annotations

import math

import pytest
import torch

from ultrares.kernels.freescale import (
    cosine_factor,
    dilation_active,
    region_exponent,
    restart_step,
    sample_self_cascade,
    upsample_image,
)


def sdxl_ddim_uniform(steps: int = 50) -> tuple[torch.Tensor, list[float]]:
    """ComfyUI's ddim_uniform σ for the SD/SDXL scaled-linear schedule, and their timesteps."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - betas, 0)
    all_sigmas = ((1 - abar) / abar).sqrt()
    ts = list(range(1, 1000, 1000 // steps))[::-1]  # 981, 961, ..., 1
    return torch.tensor([float(all_sigmas[t]) for t in ts] + [0.0]), [float(t) for t in ts]


def test_dilated_steps_are_i_below_tau():
    sigmas, _ = sdxl_ddim_uniform(50)
    dilated = [i for i in range(50) if dilation_active(sigmas[i], sigmas, 0.7)]
    assert dilated == list(range(35)), "official: i < dilate_tau = 35"
    # With the restart at 15 the sampled steps 15..34 are dilated, 35..49 not
    # (official ``pipeline_freescale.py:901-945``).
    assert [i for i in range(restart_step(50), 50) if dilation_active(sigmas[i], sigmas, 0.7)] == list(range(15, 35))
    assert not any(dilation_active(s, sigmas, 0.0) for s in sigmas[:-1])
    assert all(dilation_active(s, sigmas, 1.0) for s in sigmas[:-1])
    # An intermediate σ (second-order solvers) belongs to the step whose interval holds it.
    mid = (sigmas[34] + sigmas[35]) / 2
    assert dilation_active(mid, sigmas, 0.7) and not dilation_active(sigmas[35], sigmas, 0.7)


def test_region_exponent_binary_nearest_and_batched():
    mask = torch.zeros(2, 32, 32)
    mask[0, :, :16] = 0.25  # any non-zero value is foreground (official: pixel != 0)
    mask[1, 8:, :] = 1.0
    e = region_exponent(mask, (4, 4), cosine_scale=3.0, cosine_scale_bg=0.5, batch=3)
    assert e.shape == (3, 1, 4, 4)
    assert torch.equal(e[0, 0, :, :2], torch.full((4, 2), 3.0)) and torch.equal(e[0, 0, :, 2:], torch.full((4, 2), 0.5))
    assert torch.equal(e[1, 0, :1], torch.full((1, 4), 0.5)) and torch.equal(e[1, 0, 1:], torch.full((3, 4), 3.0))
    assert torch.equal(e[2], e[0]), "mask batch cycled to the latent batch"
    assert region_exponent(torch.ones(8, 8), (2, 2), 2.0, 1.0, 1).eq(2.0).all()


def test_upsample_image_bicubic_shape_and_constant():
    img = torch.full((1, 8, 6, 3), 0.3)
    out = upsample_image(img, (16, 12))
    assert out.shape == (1, 16, 12, 3)
    assert torch.allclose(out, torch.full_like(out, 0.3))


def test_self_cascade_restart_skip_residual_and_euler():
    torch.manual_seed(0)
    sigmas, ts = sdxl_ddim_uniform(50)
    sigmas = sigmas.float()
    x_up, n = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    r = restart_step(50)
    seen: list[tuple[float, torch.Tensor]] = []

    def denoise(x, sigma):
        seen.append((float(sigma), x.clone()))
        return x_up  # an oracle denoiser that knows the clean image

    steps: list[int] = []
    out = sample_self_cascade(denoise, x_up, sigmas, callback=lambda info: steps.append(info["i"]), x_up=x_up, noise=n,
                              timesteps=ts, restart_index=r, exponent=2.0)
    assert steps == list(range(15, 50)) and len(seen) == 35
    assert seen[0][0] == pytest.approx(float(sigmas[15]))
    assert torch.allclose(seen[0][1], x_up + sigmas[15] * n), "starts from N_r = x_up + σ_r·n"
    assert torch.allclose(out, x_up, atol=1e-5), "the oracle denoiser lands on x_up"
    # With this denoiser Euler keeps x = x_up + σ·n exactly, so the blend must leave it there too.
    for sigma, x in seen:
        assert torch.allclose(x, x_up + sigma * n, atol=1e-4)


def test_self_cascade_blend_weight_matches_c1():
    """One step with a denoiser returning 0: the model input shows c1 = c(t)^scale directly."""
    sigmas = torch.tensor([10.0, 5.0, 0.0])
    ts = [800.0, 600.0]
    x_up, n = torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
    inputs = []

    def denoise(x, sigma):
        inputs.append(x.clone())
        return torch.zeros_like(x)

    sample_self_cascade(denoise, x_up, sigmas, x_up=x_up, noise=n, timesteps=ts, restart_index=0, exponent=3.0)
    # Step 0: x = N_0 = 1. Euler to σ 5 with x0 = 0: x = 0.5. Step 1 blend toward N_1 = 1.
    c1 = float(cosine_factor(600.0)) ** 3.0
    assert inputs[1].flatten()[0].item() == pytest.approx((1 - c1) * 0.5 + c1 * 1.0, rel=1e-6)
    with pytest.raises(ValueError, match="restart"):
        sample_self_cascade(denoise, x_up, sigmas, x_up=x_up, noise=n, timesteps=ts, restart_index=2, exponent=3.0)


def test_c_at_restart_matches_spec_table():
    assert float(cosine_factor(681)) ** 2.0 == pytest.approx(0.592, abs=1e-3)
    assert math.isclose(float(cosine_factor(999)), 1.0, abs_tol=1e-4)
