"""Weights files: one reader for the pack's loaders, whose every failure is a clear message.

A weights file is a flat ``{name: tensor}`` state dict in one of three layouts, told apart by the
file's first bytes, never by its extension (the UltraPixel release is a PyTorch pickle named
``.safetensors``):

* ``torch_zip``: ``torch.save`` since PyTorch 1.6, a zip archive (``PK\\x03\\x04``);
* ``torch_pickle``: legacy ``torch.save``, raw pickles starting with the PROTO opcode (``0x80``);
* ``safetensors``: a little-endian u64 header length ``n``, a JSON header of ``n`` bytes (``{``),
  then the tensor bytes; the file is exactly ``8 + n + the largest data_offsets end`` bytes.

Readers fail on damaged files with their own texts ("incomplete metadata, file not fully
covered", "failed finding central directory", a bare ``EOFError``); worse, ``torch.load(...,
weights_only=True)`` refuses a pickle holding other Python objects with advice to pass
``weights_only=False``, which would run whatever code the file carries. Here every failure is a
:class:`DamagedWeightsError` naming the file, its folder, its size and, where the layout tells,
the size it should have; a pickle the safe loader refuses is an :class:`UnsafeWeightsError`
naming the offending global, with none of the reader's text attached.

* :func:`check_weights_file`: the cheap checks (present, not a Git LFS pointer, size against the
  safetensors header, the zip end record), without loading; returns the layout.
* :func:`read_state_dict`: the checks, then the tensors on CPU.

Pure PyTorch + safetensors + the standard library: no ComfyUI import.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import re
import struct
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, TypeVar

import torch
from torch import Tensor

WeightsFormat = Literal["torch_zip", "torch_pickle", "safetensors"]
_T = TypeVar("_T")

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save since 1.6 (zip container)
_PICKLE_PROTO = 0x80  # legacy torch.save: raw pickles starting with the PROTO opcode
_LFS_MAGIC = b"version https://git-lfs.github.com/spec/"
_MAX_SAFETENSORS_HEADER = 100_000_000  # the safetensors reader's own limit
_HEAD_BYTES = 1024  # enough for a Git LFS pointer (about 130 bytes)
_SCAN_BYTES = 64 << 20  # a legacy pickle's objects come before its tensor bytes
# Bytes per element of the safetensors dtypes (sub-byte dtypes are left to the reader).
_SAFETENSORS_ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8, "C64": 8,
}
# Globals of a plain tensor pickle that are data, not behaviour (torch.* is judged by torch).
_DATA_GLOBALS = frozenset({"collections.OrderedDict", "_codecs.encode", "builtins.set", "builtins.frozenset",
                           "builtins.bytearray", "builtins.slice", "builtins.complex"})
_STRING_OPS = frozenset({"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE",
                         "BINUNICODE", "BINUNICODE8"})


class DamagedWeightsError(ValueError):
    """A weights file that cannot be read; the message names the file, its folder and what to do."""


class UnsafeWeightsError(DamagedWeightsError):
    """A pickle holding Python objects other than tensors, refused because unpickling could run code."""


def _where(path: Path, folder: str) -> str:
    return f"file {path.name} in {folder}"


def _damaged(path: Path, folder: str, size: int, detail: str) -> DamagedWeightsError:
    """``file <name> in <folder> is damaged or incomplete (size N bytes<detail>): re-download it``."""
    return DamagedWeightsError(
        f"{_where(path, folder)} is damaged or incomplete (size {size} bytes{detail}): re-download it")


def _guarded(step: Callable[[Path, str], _T], path: Path, folder: str) -> _T:
    """``step(path, folder)``, any failure but running out of memory a :class:`DamagedWeightsError`."""
    try:
        return step(path, folder)
    except (DamagedWeightsError, MemoryError):
        raise
    except Exception as e:  # what the specific checks did not foresee: still no reader's text
        try:
            size = path.stat().st_size
        except OSError:
            size = 0
        raise _damaged(path, folder, size, ": it cannot be read") from e


# The cheap checks


def _lfs_pointer_error(path: Path, folder: str, head: bytes, size: int) -> DamagedWeightsError:
    announced = re.search(rb"^size (\d+)\s*$", head, re.MULTILINE)
    real = f"the real file is {int(announced.group(1))} bytes" if announced else "it does not say the real size"
    return DamagedWeightsError(
        f"{_where(path, folder)} is a Git LFS pointer (size {size} bytes), not the weights: {real}. "
        f"Fetch the real file with `git lfs pull` in the git checkout it came from, or re-download it")


def _safetensors_header_length(head: bytes) -> int | None:
    """The header length if ``head`` starts like a safetensors file (length, then ``{``), else None."""
    if len(head) < 9 or head[8:9] != b"{":
        return None
    (n_header,) = struct.unpack("<Q", head[:8])
    return n_header if n_header <= _MAX_SAFETENSORS_HEADER else None


def _check_safetensors(path: Path, folder: str, n_header: int, size: int) -> None:
    """Size against the header: the file ends exactly where its last tensor does."""
    if 8 + n_header > size:
        raise _damaged(path, folder, size, f", expected at least {8 + n_header} bytes: the file ends inside its "
                                           f"{n_header}-byte safetensors header")
    with open(path, "rb") as fh:
        fh.seek(8)
        raw = fh.read(n_header)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _damaged(path, folder, size, ": its safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise _damaged(path, folder, size, ": its safetensors header is not a JSON object")
    spans = []
    for key, info in header.items():
        if key == "__metadata__":
            continue
        span = _tensor_span(info)
        if span is None:
            raise _damaged(path, folder, size, f": its safetensors header entry {key!r} is malformed")
        spans.append(span)
    end = 0
    for begin, stop in sorted(spans):
        if begin != end:
            raise _damaged(path, folder, size, ": the tensors of its safetensors header overlap or leave gaps")
        end = stop
    expected = 8 + n_header + end
    if size < expected:
        raise _damaged(path, folder, size, f", expected {expected} bytes")
    if size > expected:
        raise _damaged(path, folder, size, f", expected {expected} bytes: {size - expected} bytes follow the "
                                           f"last tensor")


def _tensor_span(info: object) -> tuple[int, int] | None:
    """``(begin, end)`` of one safetensors header entry, None when the entry is malformed."""
    if not isinstance(info, dict):
        return None
    offsets, shape, dtype = info.get("data_offsets"), info.get("shape"), info.get("dtype")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1] and isinstance(shape, list)
            and all(type(d) is int and d >= 0 for d in shape) and isinstance(dtype, str)):
        return None
    itemsize = _SAFETENSORS_ITEMSIZE.get(dtype)
    numel = 1
    for d in shape:
        numel *= d
    if itemsize is not None and numel * itemsize != offsets[1] - offsets[0]:
        return None
    return offsets[0], offsets[1]


def _check_zip(path: Path, folder: str, size: int) -> None:
    """The archive's end record (the last bytes written) and central directory are present."""
    try:
        with zipfile.ZipFile(path) as archive:
            archive.namelist()
    except zipfile.BadZipFile:
        raise _damaged(path, folder, size, ": the zip archive's end record is missing") from None
    except Exception:  # a directory that points outside the file, an unknown zip version, ...
        raise _damaged(path, folder, size, ": the zip archive's directory is unreadable") from None


def check_weights_file(path: str | os.PathLike[str], *, folder: str) -> WeightsFormat:
    """The cheap integrity checks of a weights file, without loading its tensors.

    Present and a regular file, not empty, not a Git LFS pointer, one of the three layouts; a
    safetensors file exactly as long as its header says; a zip archive with its end record.

    Args:
        path: the file.
        folder: where it lives, in words (``"models/ultrapixel (/path)"``), for the messages.

    Returns:
        ``"torch_zip"``, ``"torch_pickle"`` or ``"safetensors"``.

    Raises:
        DamagedWeightsError: the message names the file, ``folder``, the size and what to do.
    """
    return _guarded(_check, Path(path), folder)


def _check(path: Path, folder: str) -> WeightsFormat:
    if path.is_dir():
        raise DamagedWeightsError(f"{_where(path, folder)} is a folder, not a weights file: put the weights file "
                                  f"itself there (re-download it)")
    if not path.is_file():
        raise DamagedWeightsError(f"{_where(path, folder)} is missing: re-download it")
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(_HEAD_BYTES)
    except OSError as e:
        raise DamagedWeightsError(f"{_where(path, folder)} cannot be read ({e.strerror or e}): check its "
                                  f"permissions, or re-download it") from e
    if size == 0:
        raise _damaged(path, folder, size, ": the file is empty")
    if head.startswith(_LFS_MAGIC):
        raise _lfs_pointer_error(path, folder, head, size)
    if head.startswith(_ZIP_MAGIC):
        _check_zip(path, folder, size)
        return "torch_zip"
    n_header = _safetensors_header_length(head)
    if n_header is not None:
        _check_safetensors(path, folder, n_header, size)
        return "safetensors"
    if head[0] == _PICKLE_PROTO:
        return "torch_pickle"
    if size < 9:
        raise _damaged(path, folder, size, ": too short for any weights format")
    looks = "; it looks like a web page saved in its place" if head.lstrip()[:1] == b"<" else ""
    raise DamagedWeightsError(
        f"{_where(path, folder)} is neither a PyTorch checkpoint nor a safetensors file (size {size} bytes, "
        f"starts with {head[:16]!r}{looks}): re-download it")


# Loading


def _scan_pickles(data: bytes, max_pickles: int) -> tuple[list[str], str | None]:
    """Read the pickles at the start of ``data`` without unpickling them.

    Legacy torch files are five pickles in a row (magic number, protocol, system info, the
    object, the storage keys), then raw tensor bytes; a plain pickle is one. The scan follows
    them while the next one starts with PROTO. Strings pushed before STACK_GLOBAL (directly or
    through the memo) name it.

    Returns:
        ``(globals, damage)``: ``module.name`` of every global referenced, and None when every
        pickle read ends with STOP, else the ``_damaged`` detail (cut short or corrupt).
    """
    found: list[str] = []
    stream = io.BytesIO(data)
    for _ in range(max_pickles):
        if stream.read(1) != bytes([_PICKLE_PROTO]):
            break
        stream.seek(-1, io.SEEK_CUR)
        pushed: list[str | None] = []
        memo: dict[int, str | None] = {}
        try:
            for op, arg, _pos in pickletools.genops(stream):
                if op.name in _STRING_OPS:
                    pushed.append(arg if isinstance(arg, str) else arg.decode("latin-1"))
                elif op.name in ("GLOBAL", "INST"):
                    found.append(".".join(str(arg).split(" ", 1)))
                    pushed.append(None)
                elif op.name == "STACK_GLOBAL":
                    if len(pushed) >= 2 and pushed[-2] is not None and pushed[-1] is not None:
                        found.append(f"{pushed[-2]}.{pushed[-1]}")
                    pushed.append(None)
                elif op.name == "MEMOIZE":
                    memo[len(memo)] = pushed[-1] if pushed else None
                elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[int(arg)] = pushed[-1] if pushed else None
                elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                    pushed.append(memo.get(int(arg)))
                elif op.stack_after:
                    pushed.append(None)
        except Exception:  # pickletools' ValueError, or a field cut short
            cut = stream.tell() >= len(data)
            return found, ": the PyTorch pickle ends early" if cut else ": its pickle data is corrupt"
    return found, None


def _pickle_bytes(path: Path, fmt: WeightsFormat) -> bytes:
    """The pickle part of a torch file: ``*/data.pkl`` of a zip archive, the start of a legacy file."""
    if fmt == "torch_zip":
        with zipfile.ZipFile(path) as archive:
            return b"".join(archive.read(n) for n in archive.namelist() if n.endswith("data.pkl"))
    with open(path, "rb") as fh:
        return fh.read(_SCAN_BYTES)


def _offending_globals(refusal: str, referenced: list[str]) -> list[str]:
    """Globals the safe loader refused: named in its message, else those the file's pickles reference."""
    named = re.findall(r"\bGLOBAL ([A-Za-z_][\w.]*)", refusal) + re.findall(r"Unsupported class ([A-Za-z_][\w.]*)",
                                                                            refusal)
    if not named:
        named = [g for g in referenced if not g.startswith("torch.") and g not in _DATA_GLOBALS]
    # os.system pickles as posix.system (nt.system on Windows): say both.
    return [f"{g}, that is os.{g.split('.', 1)[1]}" if g.split(".")[0] in ("posix", "nt") else g
            for g in dict.fromkeys(named)]


def _unsafe(path: Path, folder: str, offending: list[str]) -> UnsafeWeightsError:
    if offending:
        what = f"holds Python objects other than tensors (it references {'; '.join(offending)})"
    else:
        what = ("is not a plain PyTorch weights file: its pickle uses operations the safe loader does not "
                "allow, so it may hold Python objects other than tensors")
    return UnsafeWeightsError(
        f"{_where(path, folder)} {what}. UltraRes refuses to load it because unpickling it could run code: "
        f"use a safetensors file, or the official release from a trusted source")


def _zip_damage(path: Path) -> str | None:
    """The ``_damaged`` detail of a zip archive with an entry whose bytes fail their CRC, or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception:  # an unreadable entry header, an unknown compression method, ...
        return ": its zip archive is corrupt"
    return None if bad is None else f": entry {bad} of its zip archive is corrupt"


def _pickle_damage(path: Path, fmt: WeightsFormat, size: int, error: Exception) -> str:
    """What a failed ``torch.load`` says about the file, in the ``_damaged`` detail form."""
    more = re.search(r"expected (\d+) more bytes", str(error))
    if more:
        return f", expected at least {size + int(more.group(1))} bytes: the PyTorch file ends early"
    if fmt == "torch_zip":
        return _zip_damage(path) or ": PyTorch cannot read its zip archive"
    if isinstance(error, (EOFError, IndexError)):
        return ": the PyTorch pickle ends early"
    return ": it is not a complete PyTorch pickle"


def _load_pickle(path: Path, folder: str, fmt: WeightsFormat, size: int) -> object:
    """``torch.load(weights_only=True)``; a refusal raises with none of torch's text attached."""
    try:
        # A file object, not the path: recent torch.load routes "*.safetensors" paths to the
        # safetensors reader, which fails on the release's pickle ("header too large").
        with open(path, "rb") as fh:
            return torch.load(fh, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # refused by the safe loader, or damaged bytes it read
        refusal = str(e)
    except Exception as e:  # every other reader failure: the file is cut short or corrupt
        raise _damaged(path, folder, size, _pickle_damage(path, fmt, size, e)) from e
    # Raised outside the handler, so neither __cause__ nor __context__ carries torch's advice.
    # A pickle cut inside a name reads as an unknown global: damage first, then a refusal.
    damage = _zip_damage(path) if fmt == "torch_zip" else None
    try:
        referenced, pickle_damage = _scan_pickles(_pickle_bytes(path, fmt), max_pickles=5)
    except Exception:  # the zip entry or the file cannot be read again
        referenced, pickle_damage = [], ": it cannot be read"
    if damage or pickle_damage:
        raise _damaged(path, folder, size, damage or pickle_damage)
    raise _unsafe(path, folder, _offending_globals(refusal, referenced))


def _flat_problem(state: object) -> str | None:
    """Why ``state`` is not a flat ``{str: Tensor}`` mapping, or None."""
    if not isinstance(state, Mapping):
        return f"it holds a {type(state).__name__}, not a mapping"
    for key, value in state.items():
        if not isinstance(key, str):
            return f"its key {key!r} is not a name"
        if not isinstance(value, Tensor):
            return f"its entry {key!r} holds a {type(value).__name__}, not a tensor"
    return None


def read_state_dict(path: str | os.PathLike[str], *, folder: str) -> dict[str, Tensor]:
    """Read a flat ``{key: tensor}`` state dict on CPU, whatever the file extension says.

    :func:`check_weights_file` first, so a truncated file is reported before any reader sees it;
    then pickles go through ``torch.load(file_object, map_location="cpu", weights_only=True)``
    (no arbitrary code) and safetensors through ``safetensors.torch.load_file``.

    Args:
        path: the file.
        folder: where it lives, in words (``"models/ultrapixel (/path)"``), for the messages.

    Raises:
        DamagedWeightsError: missing, empty, a Git LFS pointer, truncated or corrupt, of an
            unknown format, or not a flat mapping of tensors.
        UnsafeWeightsError: a pickle holding other Python objects (a :class:`DamagedWeightsError`).
    """
    return _guarded(_read, Path(path), folder)


def _read(path: Path, folder: str) -> dict[str, Tensor]:
    fmt = _check(path, folder)
    size = path.stat().st_size
    if fmt == "safetensors":
        from safetensors.torch import load_file

        try:
            state: object = load_file(os.fspath(path), device="cpu")
        except Exception as e:  # the checks above leave only unusual damage (e.g. an unknown dtype)
            raise _damaged(path, folder, size, ": the safetensors reader rejects its contents") from e
    else:
        state = _load_pickle(path, folder, fmt, size)
    problem = _flat_problem(state)
    if problem is not None:
        raise DamagedWeightsError(
            f"{_where(path, folder)} is not a flat {{name: tensor}} state dict: {problem} (a training checkpoint, "
            f"say, rather than the weights). Use the released weights file (re-download it)")
    return dict(state)  # type: ignore[arg-type]
