"""UltraPixel sampler math and per-point sizes read from a checkpoint.

Reference values follow the official code (catcathh/UltraPixel@e85d3bc ``gdf/``: cosine schedule,
``cfg_rho`` rescale; ``train/train_t2i.py:262-281``: checkpoint layout).
"""
from __future__ import annotations

import math

import pytest
import torch

from ultrares.kernels.ultrapixel import build_ultrapixel_modules
from ultrares.kernels.ultrapixel_config import CHECKPOINT_PREFIXES, INJECTION_POINTS, UltraPixelConfig
from ultrares.kernels.ultrapixel_sampling import cfg_rescale, time_grid
from ultrares.kernels.ultrapixel_weights import (
    infer_point_configs,
    load_ultrapixel_modules,
    ultrapixel_checkpoint_shapes,
)

# ComfyUI sigmas of the official 20-step stage-C grid at shift 1 (last replaced by 0).
OFFICIAL_SIGMAS_20 = [99.995, 12.80727, 6.36459, 4.19954, 3.10373, 2.43544, 1.9807, 1.64777, 1.39075, 1.18408,
                  1.01239, 0.86585, 0.73787, 0.62383, 0.52038, 0.42499, 0.33572, 0.25099, 0.16944, 0.08976, 0.0]


def cosine_sigma(t: torch.Tensor, s: float = 0.008) -> torch.Tensor:
    """The official cosine schedule (``gdf/``, s = 0.008), written out here: ā clamped to [1e-4, 0.9999]."""
    alpha = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2 / math.cos(s / (1 + s) * math.pi / 2) ** 2
    alpha = alpha.clamp(1e-4, 0.9999)
    return ((1 - alpha) / alpha).sqrt()


def test_time_grid_gives_the_official_sigmas():
    t = time_grid(20)
    assert t[0] == 1.0 and t[-1] == 0.0 and t[-2].item() == pytest.approx(0.05)
    sigmas = torch.cat([cosine_sigma(t[:-1]), torch.zeros(1, dtype=t.dtype)])
    assert sigmas.tolist() == pytest.approx(OFFICIAL_SIGMAS_20, rel=2e-5, abs=1e-5)
    with pytest.raises(ValueError, match="steps"):
        time_grid(0)


def test_cfg_rescale_matches_the_official_formula():
    g = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(1, 16, 6, 6, generator=g), torch.randn(1, 16, 6, 6, generator=g) * 2
    cfg, rho = 4.0, 0.7
    e_cfg = uncond + cfg * (cond - uncond)
    expected = rho * e_cfg * cond.std() / e_cfg.std() + (1 - rho) * e_cfg
    torch.testing.assert_close(cfg_rescale(cond, uncond, cfg, rho), expected)
    torch.testing.assert_close(cfg_rescale(cond, uncond, cfg, 0.0), e_cfg)
    # Scale-free: works on sigma * eps as ComfyUI's sampler_cfg_function passes it.
    torch.testing.assert_close(cfg_rescale(3 * cond, 3 * uncond, cfg, rho), 3 * expected)
    # Per sample: batch items do not influence each other.
    both = cfg_rescale(torch.cat([cond, 5 * cond]), torch.cat([uncond, uncond]), cfg, rho)
    torch.testing.assert_close(both[:1], expected)


def release_like_state(config: UltraPixelConfig, device="meta") -> dict[str, torch.Tensor]:
    shapes = ultrapixel_checkpoint_shapes(config)
    return {"module." + k: torch.empty(shape, device=device) for k, shape in shapes.items()}


def test_release_layout_infers_the_release_config():
    configs = infer_point_configs(release_like_state(UltraPixelConfig()))  # shapes only (meta tensors)
    assert configs == {p: UltraPixelConfig() for p in INJECTION_POINTS}


def test_per_point_sizes_are_read_and_loaded_strictly():
    small = {"E0": 32, "E1": 64, "D0": 64, "D1": 32}
    gen = torch.Generator().manual_seed(1)
    state = {}
    for point in INJECTION_POINTS:
        config = UltraPixelConfig(ind=small[point], ch=32, n_head=1, n_groups=8, f_dim=32, n_freq=16)
        module = build_ultrapixel_modules(config, generator=gen)[point]
        state |= {"module." + CHECKPOINT_PREFIXES[point] + k: v for k, v in module.state_dict().items()}
    modules, configs = load_ultrapixel_modules(state)
    assert {p: c.ind for p, c in configs.items()} == small
    assert configs["E0"].n_freq == 16 and configs["E0"].n_groups == 8 and configs["E0"].n_head == 1
    for point in INJECTION_POINTS:
        for k, v in modules[point].state_dict().items():
            assert torch.equal(v, state["module." + CHECKPOINT_PREFIXES[point] + k])
    assert not any(p.requires_grad for p in modules.parameters())

    broken = dict(state)
    broken["module.64.1.output_layer.bias"] = torch.zeros(7)
    with pytest.raises(ValueError, match=r"(?s)E1.*output_layer\.bias: expected \(64,\), got \(7,\)"):
        infer_point_configs(broken)
    renamed = {k.replace("toout", "to_out"): v for k, v in state.items()}
    with pytest.raises(ValueError, match=r"(?s)missing key: 64\.0\.toout\.0\.bias.*unexpected key: 64\.0\.to_out"):
        infer_point_configs(renamed)
