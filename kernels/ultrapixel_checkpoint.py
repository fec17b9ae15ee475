"""Checkpoint layout and I/O for UltraPixel: key table, strict checking, format sniffing, loading.

UltraPixel (Ren et al., 2024). docs/algorithms.md §3.6: the released file holds 168 keys, 42 per
added module, under the prefixes ``64.0 64.1`` (encoder E0, E1) and ``65.0 65.1`` (decoder D0, D1)
after DDP's ``module.``. The released ``ultrapixel_t2i.safetensors`` is really a PyTorch pickle,
so the loader picks the format from the file's first bytes, never from its extension. Pickles are
read with ``torch.load(weights_only=True)``.

Pure PyTorch + safetensors: no ComfyUI import.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .ultrapixel import UltraPixelConfig

__all__ = [
    "INJECTION_POINTS",
    "CHECKPOINT_PREFIXES",
    "guidance_state_shapes",
    "ultrapixel_checkpoint_shapes",
    "check_ultrapixel_state_dict",
    "split_ultrapixel_state_dict",
    "CheckpointFormat",
    "detect_checkpoint_format",
    "load_checkpoint_file",
    "strip_key_prefix",
    "check_state_dict",
]

CheckpointFormat = Literal["torch_zip", "torch_pickle", "safetensors"]

INJECTION_POINTS: tuple[str, ...] = ("E0", "E1", "D0", "D1")
# Released keys are ``module.{64|65}.{0|1}.<local key>``: ModuleList([64 x GRN stand-ins, agg_net,
# agg_net_up]) saved from DDP (§3.6). ``module.`` is stripped by the loader.
CHECKPOINT_PREFIXES: dict[str, str] = {"E0": "64.0.", "E1": "64.1.", "D0": "65.0.", "D1": "65.1."}

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save since 1.6 (zip container)
_PICKLE_PROTO = 0x80  # legacy torch.save: a raw pickle starting with the PROTO opcode


def detect_checkpoint_format(path: str | os.PathLike[str]) -> CheckpointFormat:
    """Identify a checkpoint by magic bytes: torch zip, legacy torch pickle, or safetensors.

    A safetensors file starts with a little-endian u64 header length n followed by a JSON object
    (``{``) that fits in the file.

    Raises:
        ValueError: the file matches none of the three layouts.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(9)
    if head[:4] == _ZIP_MAGIC:
        return "torch_zip"
    if len(head) == 9 and head[8:9] == b"{":
        (n_header,) = struct.unpack("<Q", head[:8])
        if 8 + n_header <= size:
            return "safetensors"
    if head[:1] and head[0] == _PICKLE_PROTO:
        return "torch_pickle"
    raise ValueError(f"{os.fspath(path)!r} is neither a PyTorch checkpoint nor a safetensors file")


def load_checkpoint_file(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Load a flat ``{key: tensor}`` state dict on CPU, whatever the file extension says.

    Pickles go through ``torch.load(file_object, map_location="cpu", weights_only=True)`` (no
    arbitrary code); safetensors through ``safetensors.torch.load_file``.

    Raises:
        ValueError: unknown format, or the file does not hold a flat mapping of tensors.
    """
    fmt = detect_checkpoint_format(path)
    if fmt == "safetensors":
        from safetensors.torch import load_file

        state = load_file(os.fspath(path), device="cpu")
    else:
        # A file object, not the path: recent torch.load routes "*.safetensors" paths to the
        # safetensors reader, which fails on the release's pickle ("header too large").
        with open(path, "rb") as fh:
            state = torch.load(fh, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{os.fspath(path)!r} does not contain a flat state dict of tensors")
    return dict(state)


def strip_key_prefix(state_dict: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Drop ``prefix`` from every key when all keys carry it (e.g. DDP's ``module.``), else copy."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix) :]: v for k, v in state_dict.items()}
    return dict(state_dict)


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
    lines = [f"state dict does not match ({len(state_dict)} keys, {len(expected)} expected):"]
    for label, items in (("missing key", missing), ("unexpected key", extra), ("wrong shape", wrong)):
        lines += [f"  {label}: {item}" for item in items[:max_listed]]
        if len(items) > max_listed:
            lines.append(f"  ... and {len(items) - max_listed} more ({label})")
    return "\n".join(lines)


# Released-file layout (§3.6)


def guidance_state_shapes(config: UltraPixelConfig | None = None) -> dict[str, tuple[int, ...]]:
    """Expected ``{key: shape}`` of one module's state dict (42 keys), as tabulated in §3.6."""
    c = _config(config)
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
    local = guidance_state_shapes(config)
    return {CHECKPOINT_PREFIXES[p] + k: s for p in INJECTION_POINTS for k, s in local.items()}


def check_ultrapixel_state_dict(
    state_dict: Mapping[str, Tensor], config: UltraPixelConfig | None = None
) -> str | None:
    """None if ``state_dict`` (``module.`` optional) is exactly the §3.6 layout, else a message naming keys."""
    message = check_state_dict(strip_key_prefix(state_dict, "module."), ultrapixel_checkpoint_shapes(config))
    return None if message is None else "UltraPixel checkpoint: " + message


def split_ultrapixel_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    """``{point: module-local state dict}`` for E0/E1/D0/D1 from the file's ``64.i`` / ``65.i`` keys."""
    flat = strip_key_prefix(state_dict, "module.")
    return {
        point: {k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)}
        for point, prefix in CHECKPOINT_PREFIXES.items()
    }


def _config(config: UltraPixelConfig | None) -> UltraPixelConfig:
    if config is not None:
        return config
    from .ultrapixel import UltraPixelConfig  # deferred: ultrapixel imports this module

    return UltraPixelConfig()
