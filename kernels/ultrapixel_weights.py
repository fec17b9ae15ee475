"""UltraPixel weights: the released file's layout, one strict checker, one loader.

UltraPixel (Ren et al., 2024, arXiv:2407.02158). The official code (catcathh/UltraPixel@e85d3bc)
saves ``nn.ModuleList([64 x Null_Model, agg_net, agg_net_up])`` wrapped in DDP
(``train/train_t2i.py:262-281``), so the released ``ultrapixel_t2i.safetensors`` holds 168 keys,
42 per added module, under ``module.64.0`` / ``module.64.1`` (encoder E0, E1) and
``module.65.0`` / ``module.65.1`` (decoder D0, D1); ``inference/test_t2i.py:96-101`` strips the
``module.``. That file is really a PyTorch pickle; files are read by
``weights_file.read_state_dict`` (format from the first bytes, never the extension; pickles with
``torch.load(weights_only=True)``; every damaged file a ``DamagedWeightsError`` saying what to do).

* :func:`module_state_shapes` / :func:`ultrapixel_checkpoint_shapes`: the one layout table.
* :func:`check_state_dict`: the one strict key / shape checker (messages name the keys).
* :func:`load_ultrapixel_modules`: the one loader, for a known config or with the sizes read
  from the file (:func:`infer_point_configs`; the release, or a tiny synthetic file for tests).

Pure PyTorch + safetensors: no ComfyUI import.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from .ultrapixel import GuidanceFusionModule
from .ultrapixel_config import CHECKPOINT_PREFIXES, INJECTION_POINTS, RELEASE_HEAD_WIDTH, UltraPixelConfig
from .weights_file import read_state_dict


def strip_key_prefix(state_dict: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Drop ``prefix`` from every key when all keys carry it (e.g. DDP's ``module.``), else copy."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix) :]: v for k, v in state_dict.items()}
    return dict(state_dict)


# The strict checker


def list_key_problems(problems: Iterable[tuple[str, list[str]]], max_listed: int = 10) -> list[str]:
    """``  <label>: <item>`` lines, up to ``max_listed`` per label, then ``... and N more (<label>)``."""
    lines = []
    for label, items in problems:
        lines += [f"  {label}: {item}" for item in items[:max_listed]]
        if len(items) > max_listed:
            lines.append(f"  ... and {len(items) - max_listed} more ({label})")
    return lines


def check_state_dict(
    state_dict: Mapping[str, Tensor], expected: Mapping[str, tuple[int, ...]], max_listed: int = 10
) -> str | None:
    """Strict comparison of a state dict with an expected ``{key: shape}`` table.

    Returns:
        ``None`` when keys and shapes match exactly, otherwise a readable message naming the
        missing keys, unexpected keys and shape mismatches (up to ``max_listed`` of each, then a
        count).
    """
    missing = [k for k in expected if k not in state_dict]
    extra = [k for k in state_dict if k not in expected]
    wrong = [
        f"{k}: expected {tuple(shape)}, got {tuple(state_dict[k].shape)}"
        for k, shape in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(shape)
    ]
    if not (missing or extra or wrong):
        return None
    header = f"state dict does not match ({len(state_dict)} keys, {len(expected)} expected):"
    problems = (("missing key", missing), ("unexpected key", extra), ("wrong shape", wrong))
    return "\n".join([header, *list_key_problems(problems, max_listed)])


# The released layout (train/train_t2i.py:262-281)


def module_state_shapes(config: UltraPixelConfig | None = None) -> dict[str, tuple[int, ...]]:
    """Expected ``{key: shape}`` of one module's state dict (42 keys), the release's names."""
    c = config if config is not None else UltraPixelConfig()
    shapes: dict[str, tuple[int, ...]] = {
        "wtokens": (sum(c.inr_groups().values()), c.f_dim),
        "input_layer.weight": (c.ch, c.ind, 1, 1),
        "input_layer.bias": (c.ch,),
        "tokenizer.posemb": (c.n_pos, c.ch),
        "tokenizer.prefc.weight": (c.ch, c.ch),
        "tokenizer.prefc.bias": (c.ch,),
    }
    for i in range(c.depth):
        p = f"transformer_encoder.layers.{i}."
        shapes |= {
            p + "0.norm.weight": (c.f_dim,),
            p + "0.norm.bias": (c.f_dim,),
            p + "0.fn.to_q.1.weight": (c.f_dim, c.f_dim),
            p + "0.fn.to_q.1.bias": (c.f_dim,),
            p + "0.fn.to_kv.1.weight": (2 * c.f_dim, c.f_dim),
            p + "0.fn.to_kv.1.bias": (2 * c.f_dim,),
            p + "1.norm.weight": (c.f_dim,),
            p + "1.norm.bias": (c.f_dim,),
            p + "1.fn.net.0.weight": (c.f_dim, c.f_dim),
            p + "1.fn.net.0.bias": (c.f_dim,),
            p + "1.fn.net.3.weight": (c.f_dim, c.f_dim),
            p + "1.fn.net.3.bias": (c.f_dim,),
        }
    layers = c.inr_layer_shapes()
    shapes |= {f"base_params.{name}": shape for name, shape in layers.items()}
    for name, (d_in, _) in layers.items():
        shapes |= {
            f"wtoken_postfc.{name}.0.weight": (c.f_dim,),
            f"wtoken_postfc.{name}.0.bias": (c.f_dim,),
            f"wtoken_postfc.{name}.1.weight": (d_in - 1, c.f_dim),
            f"wtoken_postfc.{name}.1.bias": (d_in - 1,),
        }
    shapes |= {
        "output_layer.weight": (c.ind, c.ch, 1, 1),
        "output_layer.bias": (c.ind,),
        "mapp_t.mapper.weight": (2 * c.ind, c.time_dim),
        "mapp_t.mapper.bias": (2 * c.ind,),
        "hr_norm.mapping.mapper.weight": (2 * c.ind, c.scale_dim),
        "hr_norm.mapping.mapper.bias": (2 * c.ind,),
        "hr_norm.alpha.weight": (c.ind, c.ind, 1, 1),
        "hr_norm.alpha.bias": (c.ind,),
        "hr_norm.gamma.weight": (c.ind, c.ind, 1, 1),
        "hr_norm.gamma.bias": (c.ind,),
        "toout.0.weight": (c.ind // 4, 2 * c.ind),
        "toout.0.bias": (c.ind // 4,),
        "toout.2.weight": (c.ind, c.ind // 4),
        "toout.2.bias": (c.ind,),
    }
    return shapes


def ultrapixel_checkpoint_shapes(config: UltraPixelConfig | None = None) -> dict[str, tuple[int, ...]]:
    """Expected ``{key: shape}`` of the whole released file after stripping ``module.`` (168 keys)."""
    local = module_state_shapes(config)
    return {CHECKPOINT_PREFIXES[p] + k: s for p in INJECTION_POINTS for k, s in local.items()}


def check_ultrapixel_state_dict(
    state_dict: Mapping[str, Tensor], config: UltraPixelConfig | None = None
) -> str | None:
    """None if ``state_dict`` (``module.`` optional) is exactly the released layout, else a message naming keys."""
    message = check_state_dict(strip_key_prefix(state_dict, "module."), ultrapixel_checkpoint_shapes(config))
    return None if message is None else "UltraPixel checkpoint: " + message


def split_ultrapixel_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    """``{point: module-local state dict}`` for E0/E1/D0/D1 from the file's ``64.i`` / ``65.i`` keys."""
    flat = strip_key_prefix(state_dict, "module.")
    return {
        point: {k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)}
        for point, prefix in CHECKPOINT_PREFIXES.items()
    }


# Sizes read from the file


def infer_module_config(local: Mapping[str, Tensor]) -> UltraPixelConfig:
    """Sizes of one added module read from its (module-local) state dict.

    Everything but the head count is a tensor dimension (:func:`module_state_shapes`). The head count is not
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

    1. Key names (``module.`` optional) must be exactly the release's 168.
    2. Each point's sizes are read from its tensors (:func:`infer_module_config`); every
       tensor's shape must then match :func:`module_state_shapes` for those sizes.

    Raises:
        ValueError: message naming missing / unexpected keys or wrong shapes.
    """
    flat = strip_key_prefix(state_dict, "module.")
    names = set(ultrapixel_checkpoint_shapes(UltraPixelConfig()))
    missing = sorted(k for k in names if k not in flat)
    extra = sorted(k for k in flat if k not in names)
    if missing or extra:
        header = f"UltraPixel checkpoint: {len(flat)} keys, the release layout has {len(names)}:"
        lines = list_key_problems((("missing key", missing), ("unexpected key", extra)))
        raise ValueError("\n".join([header, *lines]))
    configs: dict[str, UltraPixelConfig] = {}
    problems: list[str] = []
    for point, local in split_ultrapixel_state_dict(flat).items():
        try:
            config = infer_module_config(local)
            message = check_state_dict(local, module_state_shapes(config))
        except ValueError as e:  # inconsistent sizes (e.g. ch != f_dim)
            message = str(e)
        if message is not None:
            problems.append(f"[{point}, keys {CHECKPOINT_PREFIXES[point]}*] {message}")
        else:
            configs[point] = config
    if problems:
        raise ValueError("UltraPixel checkpoint: tensor shapes are inconsistent:\n" + "\n".join(problems))
    return configs


# Building and loading the four modules


def load_ultrapixel_modules(
    source: str | os.PathLike[str] | Mapping[str, Tensor],
    config: UltraPixelConfig | None = None,
    *,
    dtype: torch.dtype | None = None,
    folder: str | None = None,
) -> tuple[nn.ModuleDict, dict[str, UltraPixelConfig]]:
    """Load the released weights (pickle or safetensors, checked strictly) into four modules.

    The modules are built on the meta device and take the file's tensors with ``strict=True``
    (no random initialisation), and come back in eval mode with gradients off, keyed
    ``E0 E1 D0 D1`` (see ``STAGE_C_BLOCKS``).

    Args:
        source: checkpoint path, or an already loaded state dict (``module.`` prefix optional).
        config: the sizes every module must have; ``None`` reads them per point from the
            tensors (:func:`infer_point_configs`).
        dtype: cast the weights (default: keep the file's dtype, bf16 for the release).
        folder: where the file lives, in words, for the messages about a damaged file (default:
            its absolute directory).

    Returns:
        ``(modules, {point: config})``.

    Raises:
        DamagedWeightsError: the file is missing, truncated, a Git LFS pointer, of an unknown
            format or holds other Python objects (``weights_file.read_state_dict``).
        ValueError: keys / shapes differ from the layout (the message names them).
    """
    if isinstance(source, (str, os.PathLike)):
        where = folder if folder is not None else os.path.dirname(os.path.abspath(source))
        state = read_state_dict(source, folder=where)
    else:
        state = dict(source)
    if config is None:
        configs = infer_point_configs(state)
    else:
        message = check_ultrapixel_state_dict(state, config)
        if message is not None:
            raise ValueError(message)
        configs = {p: config for p in INJECTION_POINTS}
    with torch.device("meta"):
        modules = nn.ModuleDict({p: GuidanceFusionModule(configs[p]) for p in INJECTION_POINTS})
    for point, local in split_ultrapixel_state_dict(state).items():
        modules[point].load_state_dict(local, strict=True, assign=True)
    modules = modules.to(dtype=dtype) if dtype is not None else modules
    return modules.eval().requires_grad_(False), configs
