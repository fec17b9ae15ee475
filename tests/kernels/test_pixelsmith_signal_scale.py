"""sample_pixelsmith in other parameterisations (signal_scales: x = α·z + σ·n, e.g. rectified flow)."""
from __future__ import annotations

import pytest
import torch

from ultrares.kernels.pixelsmith import sample_pixelsmith, start_latent


def crops(t, boxes):
    """The windows ``boxes`` of ``t``, concatenated along the batch (the sampler's patch layout)."""
    return torch.cat([t[..., b.top:b.top + b.height, b.left:b.left + b.width] for b in boxes])


def oracle(z_up, start, sigma_0, seen):
    """Denoiser that predicts the guidance latent exactly (x0 = z_up on the patch windows).

    It also records what the sampler feeds it in its first call (windows at σ_0, nothing advanced
    yet): the start state α_0·z + σ_0·n after the phase fusion with G[0] = α_0·z_up + σ_0·n. That
    fusion is an identity only when G[0] is built with the right signal scale; a wrong α changes
    the model input (the final x0 = z_up step alone would land on z for any α).
    """
    def denoise(y, sigma, boxes):
        B = z_up.shape[0]
        out = crops(z_up, boxes)
        assert out.shape == y.shape and out.shape[0] == len(boxes) * B
        if not seen:
            assert float(sigma.flatten()[0]) == pytest.approx(sigma_0)
            seen.append(float((y - crops(start, boxes)).abs().max()))
        return out
    return denoise


@pytest.mark.parametrize("flow", [False, True])
@pytest.mark.parametrize("mode", ["faithful", "fast"])
def test_exact_denoiser_lands_on_the_guidance(flow, mode):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 3, 24, 40, generator=g)
    n = torch.randn(2, 3, 24, 40, generator=g)
    sigmas = [0.9, 0.6, 0.3, 0.1, 0.0] if flow else [8.0, 3.0, 1.0, 0.2, 0.0]
    alphas = [1 - s for s in sigmas] if flow else None
    x = start_latent(z, n, sigmas[0], alphas[0] if flow else 1.0)
    seen: list[float] = []
    out = sample_pixelsmith(oracle(z, x, sigmas[0], seen), x, sigmas, z_up=z, noise=n, slider=2,
                            generator=torch.Generator().manual_seed(1), patch_size=16, band=3, mode=mode,
                            patch_batch=3, signal_scales=alphas)
    assert torch.allclose(out, z, atol=1e-5)
    assert seen[0] < 1e-4, f"first model input is not the start state α_0·z + σ_0·n (max error {seen[0]:.3g})"


def test_first_state_uses_signal_scale():
    """With slider 0 and one step to σ=0 the input to the model is the start G[0] = α0·z + σ0·n."""
    z, n = torch.randn(1, 2, 8, 8), torch.randn(1, 2, 8, 8)
    seen = []

    def denoise(y, sigma, boxes):
        seen.append(y.clone())
        return torch.zeros_like(y)

    sample_pixelsmith(denoise, start_latent(z, n, 0.75, 0.25), [0.75, 0.0], z_up=z, noise=n, slider=0,
                      generator=torch.Generator().manual_seed(0), patch_size=8, signal_scales=[0.25, 1.0])
    assert torch.allclose(seen[0], 0.25 * z + 0.75 * n)
    with pytest.raises(ValueError, match="signal_scales"):
        sample_pixelsmith(denoise, z, [0.75, 0.0], z_up=z, noise=n, slider=0,
                          generator=torch.Generator().manual_seed(0), signal_scales=[1.0])
