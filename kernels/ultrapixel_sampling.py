"""UltraPixel sampler math: the CFG rescale (``cfg_rho``) and the continuous-time grid.

UltraPixel (Ren et al., 2024, arXiv:2407.02158). Both follow the official code
(catcathh/UltraPixel@e85d3bc): the CFG rescale is ``gdf/__init__.py:47,155-161,179-184`` with
``cfg_rho = 0.7`` and the grid ``t_i = linspace(1, 0, steps + 1)`` of the same sampler, with the
settings of ``inference/test_t2i.py:113-125``.

Pure PyTorch: no ComfyUI import, no other UltraPixel module.
"""

from __future__ import annotations

import torch
from torch import Tensor


def cfg_rescale(cond: Tensor, uncond: Tensor, cfg: float, rho: float) -> Tensor:
    """Official CFG with rescale: ``e = rho * e_cfg * std(e_c) / std(e_cfg) + (1 - rho) * e_cfg``.

    As the official ``gdf/__init__.py:155-161`` (``cfg_rho = 0.7``). Works on eps or on sigma * eps
    (the std ratio is scale-free). The official code takes the std over the whole tensor; here it
    is per sample (identical for batch 1, and batch items stay independent for batch > 1).
    """
    e_cfg = uncond + cfg * (cond - uncond)
    if rho == 0.0:
        return e_cfg
    dims = tuple(range(1, cond.ndim))
    ratio = cond.std(dim=dims, keepdim=True) / e_cfg.std(dim=dims, keepdim=True).clamp_min(1e-12)
    return rho * (e_cfg * ratio) + (1.0 - rho) * e_cfg


def time_grid(steps: int) -> Tensor:
    """Continuous times ``t_i = linspace(1, 0, steps + 1)`` of the official sampler, float64.

    The model is evaluated at ``t_0 .. t_{steps-1}``; with 20 steps the last evaluated time is
    0.05. Callers map t to sigma with the model's schedule and replace the final t = 0 by
    sigma = 0 so that the last step returns x0, as the official loop does (``inference/utils.py:124-126``).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
