"""UltraPixel run-time helpers: checkpoint config inference, CFG rescale, the continuous-time grid.

UltraPixel (Ren et al., 2024); behaviour from docs/algorithms.md §3.3 (sampler, CFG rescale with
cfg_rho) and §3.6 (checkpoint layout). Pure PyTorch: no ComfyUI import.

* :func:`infer_point_configs` / :func:`load_point_modules` read a checkpoint whose module sizes
  are not known in advance (the release, or a tiny synthetic file for tests) and check it
  strictly: key names must be exactly the release's 168, shapes must agree with the sizes read
  from the file, and every message names the offending keys.
* :func:`cfg_rescale` is the official ``cfg_rho`` rescale of the CFG result.
* :func:`time_grid` is the official ``t_i = linspace(1, 0, steps + 1)`` grid.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from .ultrapixel import UltraPixelConfig, UltraPixelGuidance
from .ultrapixel_checkpoint import (
    CHECKPOINT_PREFIXES,
    INJECTION_POINTS,
    check_state_dict,
    guidance_state_shapes,
    split_ultrapixel_state_dict,
    strip_key_prefix,
    ultrapixel_checkpoint_shapes,
)

__all__ = [
    "RELEASE_HEAD_WIDTH",
    "infer_guidance_config",
    "infer_point_configs",
    "load_point_modules",
    "cfg_rescale",
    "time_grid",
]

RELEASE_HEAD_WIDTH = 32  # 32 heads x 32 dims in the release (§3.5); head count is not stored in the file


def infer_guidance_config(local: Mapping[str, Tensor]) -> UltraPixelConfig:
    """Sizes of one added module read from its (module-local) state dict.

    Everything but the head count is a tensor dimension (§3.6 table). The head count is not
    stored; the release uses heads of 32 dims, so ``n_head = f_dim // 32`` (1 head below 32).
    The weight-token count is ``2 * min(n_groups, width)`` for the two implicit-function layers.

    Raises:
        KeyError: a key needed to read a size is missing (callers check names first).
    """
    ch, ind = local["input_layer.weight"].shape[:2]
    f_dim = local["transformer_encoder.layers.0.0.norm.weight"].shape[0]
    depth = len({m.group(1) for k in local if (m := re.match(r"transformer_encoder\.layers\.(\d+)\.", k))})
    return UltraPixelConfig(
        ind=int(ind), ch=int(ch),
        n_head=max(1, int(f_dim) // RELEASE_HEAD_WIDTH) if f_dim % RELEASE_HEAD_WIDTH == 0 else 1,
        n_groups=int(local["wtokens"].shape[0]) // 2,
        f_dim=int(f_dim),
        time_dim=int(local["mapp_t.mapper.weight"].shape[1]),
        scale_dim=int(local["hr_norm.mapping.mapper.weight"].shape[1]),
        n_pos=int(local["tokenizer.posemb"].shape[0]),
        n_freq=(int(local["base_params.wb0"].shape[0]) - 1) // 4,
        depth=depth,
    )


def infer_point_configs(state_dict: Mapping[str, Tensor]) -> dict[str, UltraPixelConfig]:
    """Check a checkpoint strictly and return the module sizes per injection point.

    1. Key names (``module.`` optional) must be exactly the release's 168 (§3.6).
    2. Each point's sizes are read from its tensors (:func:`infer_guidance_config`); every
       tensor's shape must then match the §3.6 table for those sizes.

    Raises:
        ValueError: message naming missing / unexpected keys or wrong shapes.
    """
    flat = strip_key_prefix(state_dict, "module.")
    names = set(ultrapixel_checkpoint_shapes(UltraPixelConfig()))
    missing = sorted(k for k in names if k not in flat)
    extra = sorted(k for k in flat if k not in names)
    if missing or extra:
        lines = [f"UltraPixel checkpoint: {len(flat)} keys, the release layout has {len(names)}:"]
        for label, items in (("missing key", missing), ("unexpected key", extra)):
            lines += [f"  {label}: {k}" for k in items[:10]]
            if len(items) > 10:
                lines.append(f"  ... and {len(items) - 10} more ({label})")
        raise ValueError("\n".join(lines))
    configs: dict[str, UltraPixelConfig] = {}
    problems: list[str] = []
    for point, local in split_ultrapixel_state_dict(flat).items():
        try:
            config = infer_guidance_config(local)
            message = check_state_dict(local, guidance_state_shapes(config))
        except ValueError as e:  # inconsistent sizes (e.g. ch != f_dim)
            message = str(e)
        if message is not None:
            problems.append(f"[{point}, keys {CHECKPOINT_PREFIXES[point]}*] {message}")
        else:
            configs[point] = config
    if problems:
        raise ValueError("UltraPixel checkpoint: tensor shapes are inconsistent:\n" + "\n".join(problems))
    return configs


def load_point_modules(
    state_dict: Mapping[str, Tensor], dtype: torch.dtype | None = None
) -> tuple[nn.ModuleDict, dict[str, UltraPixelConfig]]:
    """Four modules (``E0 E1 D0 D1``) holding the checkpoint's tensors, eval mode, no gradients.

    Sizes come from :func:`infer_point_configs` (strict). Modules are built on the meta device
    and take the file's tensors with ``strict=True`` (no random initialisation).
    """
    configs = infer_point_configs(state_dict)
    with torch.device("meta"):
        modules = nn.ModuleDict({p: UltraPixelGuidance(configs[p]) for p in INJECTION_POINTS})
    for point, local in split_ultrapixel_state_dict(state_dict).items():
        modules[point].load_state_dict(local, strict=True, assign=True)
    modules = modules.to(dtype=dtype) if dtype is not None else modules
    return modules.eval().requires_grad_(False), configs


def cfg_rescale(cond: Tensor, uncond: Tensor, cfg: float, rho: float) -> Tensor:
    """Official CFG with rescale: ``e = rho * e_cfg * std(e_c) / std(e_cfg) + (1 - rho) * e_cfg``.

    docs/algorithms.md §3.3 (``cfg_rho = 0.7``). Works on eps or on sigma * eps (the std ratio is
    scale-free). The official code takes the std over the whole tensor; here it is per sample
    (identical for batch 1, and batch items stay independent for batch > 1).
    """
    e_cfg = uncond + cfg * (cond - uncond)
    if rho == 0.0:
        return e_cfg
    dims = tuple(range(1, cond.ndim))
    ratio = cond.std(dim=dims, keepdim=True) / e_cfg.std(dim=dims, keepdim=True).clamp_min(1e-12)
    return rho * (e_cfg * ratio) + (1.0 - rho) * e_cfg


def time_grid(steps: int) -> Tensor:
    """Continuous times ``t_i = linspace(1, 0, steps + 1)`` of the official sampler (§3.3), float64.

    The model is evaluated at ``t_0 .. t_{steps-1}``; with 20 steps the last evaluated time is
    0.05. Callers map t to sigma with the model's schedule and replace the final t = 0 by
    sigma = 0 so that the last step returns x0, as the official loop does.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)

