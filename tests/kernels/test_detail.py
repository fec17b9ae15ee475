"""keep_latent_detail: the low latent band from the source latent, the high band from the re-encoded one."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d

from ultrares.kernels.detail import keep_latent_detail


def low(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    k = 2 * int(3 * sigma) + 1
    return gaussian_blur2d(x, (k, k), (sigma, sigma), border_type="replicate")


def test_is_the_resized_latent_plus_the_low_passed_difference():
    g = torch.Generator().manual_seed(0)
    source, resized = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 16, 16, generator=g)
    kept = (source.clone(), resized.clone())
    out = keep_latent_detail(resized, source)
    up = F.interpolate(source, size=(16, 16), mode="nearest-exact")
    assert torch.allclose(out, resized + low(up - resized), atol=1e-6)
    assert torch.equal(source, kept[0]) and torch.equal(resized, kept[1]), "inputs are not changed"
    assert torch.equal(keep_latent_detail(resized, source, sigma=0), up), "sigma 0: the latent route alone"
    assert keep_latent_detail(resized.half(), source).dtype == torch.float16


def test_keeps_the_source_code_that_an_rgb_resize_washed_out():
    """A per-cell code (a constant offset over a region, as a VAE stores a fine texture) that the
    re-encoded latent lost comes back, while the re-encoded latent's sharp edge stays."""
    code = torch.zeros(1, 4, 16, 16)
    code[:, :, :, :8] = torch.tensor([0.5, -0.3, 0.2, 0.4]).view(1, 4, 1, 1)  # textured left half
    edge = torch.zeros(1, 4, 32, 32)
    edge[:, :, 10:22, 10:22] = 1.0  # an object's sharp outline, only in the re-encoded latent
    source = code + F.interpolate(edge, size=(16, 16), mode="area")
    resized = edge  # the RGB route: the object, but the left half's texture code is gone
    out = keep_latent_detail(resized, source)
    up = F.interpolate(source, size=(32, 32), mode="nearest-exact")
    inner = (slice(None), slice(None), slice(4, 28), slice(4, 28))
    assert (low(out) - low(up))[inner].abs().mean() < 0.25 * (low(resized) - low(up))[inner].abs().mean()
    high = (out - low(out))[inner], (resized - low(resized))[inner]
    assert (high[0] - high[1]).abs().mean() < 0.25 * high[1].abs().mean(), "the sharp edge is the re-encoded one"
    assert out[0, :, 2:8, 2:6].mean(dim=(-2, -1)).sub(code[0, :, 0, 0]).abs().max() < 0.05, "the code is back"


def test_refuses_mismatched_latents():
    with pytest.raises(ValueError, match="channels"):
        keep_latent_detail(torch.zeros(1, 4, 16, 16), torch.zeros(1, 16, 8, 8))
