"""The weights-file reader: every damaged file is a clear message, never a reader's own text.

Real files written to ``tmp_path``: ``safetensors.torch.save_file`` and ``torch.save`` (zip and
legacy) output cut at several points, a Git LFS pointer, and pickles that run a shell command
when unpickled (plain ``pickle.dump``, inside a torch zip, inside a legacy torch file).
"""
from __future__ import annotations

import os
import pickle
import re
import shlex
import zipfile
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors.torch import save_file

from ultrares.kernels.ultrapixel_weights import load_ultrapixel_modules
from ultrares.kernels.weights_file import (
    DamagedWeightsError,
    UnsafeWeightsError,
    check_weights_file,
    read_state_dict,
)

FOLDER = "models/ultrapixel (/srv/comfy/models/ultrapixel)"
# Texts of safetensors, torch.load and pickle that must never reach the user.
READER_TEXTS = ("incomplete metadata", "not fully covered", "header too large", "invalid header",
                "central directory", "PytorchStreamReader", "miniz", "unexpected EOF", "weights_only",
                "Weights only", "WeightsUnpickler", "Unsupported operand", "pickle data was truncated")
WRITERS = ("torch_zip", "torch_pickle", "safetensors")


def sample_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"a": torch.arange(100, dtype=torch.float32),
            "block.0.weight": torch.randn(3, 4, generator=g).to(torch.bfloat16),
            "steps": torch.tensor([1, 2, 3], dtype=torch.int64)}


def write(path: Path, fmt: str, state: object | None = None) -> Path:
    state = sample_state() if state is None else state
    if fmt == "safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path, _use_new_zipfile_serialization=fmt == "torch_zip")
    return path


def error_chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo = [error]
    while todo:
        e = todo.pop()
        if e is not None and e not in seen:
            seen.append(e)
            todo += [e.__cause__, e.__context__]
    return seen


def raised(path: Path) -> DamagedWeightsError:
    try:
        read_state_dict(path, folder=FOLDER)
    except DamagedWeightsError as e:
        return e
    raise AssertionError(f"{path} loaded")


def failure(path: Path, kind: type[DamagedWeightsError] = DamagedWeightsError) -> str:
    """The message ``read_state_dict`` raises for ``path``, after the checks every message passes.

    ``kind`` DamagedWeightsError: damage, never reported as an unsafe pickle.
    """
    error = raised(path)
    assert isinstance(error, kind) and (kind is UnsafeWeightsError) == isinstance(error, UnsafeWeightsError)
    message = str(error)
    assert f"file {path.name} in {FOLDER}" in message
    for text in READER_TEXTS:
        assert text not in message, (text, message)
    return message


# Good files


@pytest.mark.parametrize("fmt", WRITERS)
@pytest.mark.parametrize("name", ["weights.safetensors", "weights.pt", "weights"])
def test_good_files_round_trip_whatever_the_extension(tmp_path, fmt, name):
    path = write(tmp_path / name, fmt)
    assert check_weights_file(path, folder=FOLDER) == fmt
    loaded = read_state_dict(path, folder=FOLDER)
    expected = sample_state()
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        assert loaded[key].dtype == value.dtype and torch.equal(loaded[key], value), key


# Missing, empty, Git LFS pointer


def test_missing_file_and_folder(tmp_path):
    assert "is missing: re-download it" in failure(tmp_path / "absent.safetensors")
    (tmp_path / "weights.safetensors").mkdir()
    assert "is a folder, not a weights file" in failure(tmp_path / "weights.safetensors")


def test_empty_file(tmp_path):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"")
    assert failure(path).endswith(
        f"file weights.safetensors in {FOLDER} is damaged or incomplete (size 0 bytes: the file is empty): "
        "re-download it")


def test_git_lfs_pointer_is_named_with_the_size_it_announces(tmp_path):
    pointer = (b"version https://git-lfs.github.com/spec/v1\n"
               b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
               b"size 210993291\n")
    path = tmp_path / "ultrapixel_t2i.safetensors"
    path.write_bytes(pointer)
    message = failure(path)
    assert f"is a Git LFS pointer (size {len(pointer)} bytes), not the weights" in message
    assert "the real file is 210993291 bytes" in message
    assert "`git lfs pull`" in message and "re-download it" in message
    with pytest.raises(DamagedWeightsError, match="Git LFS pointer"):
        check_weights_file(path, folder=FOLDER)


# Truncated and corrupt safetensors: caught before the safetensors reader sees the file


def safetensors_cuts(path: Path) -> list[tuple[int, str]]:
    """(cut size, expected detail) for a safetensors file: before, inside and after its header."""
    size = path.stat().st_size
    header_end = 8 + int.from_bytes(path.read_bytes()[:8], "little")
    inside = (f", expected at least {header_end} bytes: the file ends inside its {header_end - 8}-byte "
              "safetensors header")
    return [(3, ": too short for any weights format"), (8, ": too short for any weights format"),
            (9, inside), (header_end // 2, inside), (header_end - 1, inside),
            (header_end, f", expected {size} bytes"), (header_end + 1, f", expected {size} bytes"),
            ((header_end + size) // 2, f", expected {size} bytes"), (size - 1, f", expected {size} bytes")]


def test_truncated_safetensors_says_how_long_it_should_be(tmp_path, monkeypatch):
    def reader_must_not_run(*args, **kwargs):
        raise AssertionError("the safetensors reader saw a damaged file")

    monkeypatch.setattr(safetensors.torch, "load_file", reader_must_not_run)
    good = write(tmp_path / "good.safetensors", "safetensors")
    for size, detail in safetensors_cuts(good):
        path = tmp_path / f"cut_{size}.safetensors"
        path.write_bytes(good.read_bytes()[:size])
        message = failure(path)
        assert message.endswith(f"is damaged or incomplete (size {size} bytes{detail}): re-download it"), message
        with pytest.raises(DamagedWeightsError) as info:
            check_weights_file(path, folder=FOLDER)
        assert str(info.value) == message


def test_safetensors_with_extra_bytes_or_a_broken_header(tmp_path):
    good = write(tmp_path / "good.safetensors", "safetensors")
    data = good.read_bytes()
    size, header_end = len(data), 8 + int.from_bytes(data[:8], "little")

    longer = tmp_path / "longer.safetensors"
    longer.write_bytes(data + b"\0" * 5)
    assert f"(size {size + 5} bytes, expected {size} bytes: 5 bytes follow the last tensor)" in failure(longer)

    garbled = tmp_path / "garbled.safetensors"
    garbled.write_bytes(data[:9] + b"#" * (header_end - 9) + data[header_end:])
    assert f"(size {size} bytes: its safetensors header is not valid JSON)" in failure(garbled)

    gap = tmp_path / "gap.safetensors"
    header = data[8:header_end].replace(b'"data_offsets":[0,', b'"data_offsets":[4,', 1)
    assert header != data[8:header_end]
    gap.write_bytes(data[:8] + header + data[header_end:])
    assert "safetensors header" in failure(gap)


# Truncated and corrupt PyTorch files


@pytest.mark.parametrize("fraction", [0.003, 0.05, 0.5, 0.99, 1.0])
def test_truncated_torch_zip_misses_its_end_record(tmp_path, monkeypatch, fraction):
    good = write(tmp_path / "good.pt", "torch_zip")
    size = max(5, int(good.stat().st_size * fraction) - 1)
    path = tmp_path / "weights.safetensors"
    path.write_bytes(good.read_bytes()[:size])
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load saw a cut zip archive"))
    message = failure(path)
    assert message.endswith(f"(size {size} bytes: the zip archive's end record is missing): re-download it")


def test_corrupt_entry_of_a_torch_zip_is_named(tmp_path):
    path = write(tmp_path / "weights.pt", "torch_zip")
    with zipfile.ZipFile(path) as archive:
        entry = next(i for i in archive.infolist() if i.filename.endswith("data.pkl"))
    data = bytearray(path.read_bytes())
    name_len, extra_len = int.from_bytes(data[entry.header_offset + 26:entry.header_offset + 28], "little"), \
        int.from_bytes(data[entry.header_offset + 28:entry.header_offset + 30], "little")
    start = entry.header_offset + 30 + name_len + extra_len
    assert data[start] == 0x80  # the pickle's PROTO opcode
    data[start] = 0x7F
    path.write_bytes(bytes(data))
    assert f"(size {len(data)} bytes: entry {entry.filename} of its zip archive is corrupt)" in failure(path)


@pytest.mark.parametrize("size", [1, 2, 50, 200, -40, -1])
def test_truncated_legacy_pickle_is_damaged_not_unsafe(tmp_path, size):
    good = write(tmp_path / "good.pt", "torch_pickle")
    full = good.stat().st_size
    size = size if size > 0 else full + size
    path = tmp_path / "weights.pt"
    path.write_bytes(good.read_bytes()[:size])
    message = failure(path)
    assert re.search(rf"is damaged or incomplete \(size {size} bytes[,:].*\): re-download it$", message), message
    if size > full - 50:  # inside the tensor bytes: torch says how many of the current tensor's are missing
        expected = int(re.search(r"expected at least (\d+) bytes", message).group(1))
        assert size < expected <= full and (expected == full or size < full - 1)


@pytest.mark.parametrize("fmt", ["torch_zip", "torch_pickle"])
def test_no_cut_of_a_torch_file_reads_as_unsafe(tmp_path, fmt):
    """A pickle cut inside a global's name reads, to the safe loader, as an unknown global."""
    data = write(tmp_path / "good.pt", fmt).read_bytes()
    path = tmp_path / "weights.pt"
    for size in range(1, len(data), 3):
        path.write_bytes(data[:size])
        error = raised(path)
        assert not isinstance(error, UnsafeWeightsError), (size, str(error))
        assert "is damaged or incomplete" in str(error), (size, str(error))


# Pickles that would run code


class RunsAShellCommand:
    """Unpickling this runs ``echo pwned > marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"echo pwned > {shlex.quote(str(self.marker))}",)


def write_malicious(path: Path, how: str, marker: Path) -> Path:
    payload = RunsAShellCommand(marker)
    if how == "pickle.dump":
        with open(path, "wb") as fh:
            pickle.dump(payload, fh)
    else:
        torch.save({"weight": torch.ones(2), "extra": payload}, path,
                   _use_new_zipfile_serialization=how == "torch_zip")
    return path


@pytest.mark.parametrize("how", ["pickle.dump", "torch_zip", "torch_pickle"])
def test_pickle_of_other_objects_is_refused_without_torchs_advice(tmp_path, how):
    marker = tmp_path / "pwned"
    path = write_malicious(tmp_path / "ultrapixel_t2i.safetensors", how, marker)
    assert not marker.exists()

    message = failure(path, UnsafeWeightsError)
    assert not marker.exists(), "the file's code ran"
    assert re.search(r"\b(posix|nt)\.system, that is os\.system\b", message), message
    assert "holds Python objects other than tensors" in message
    assert "UltraRes refuses to load it because unpickling it could run code" in message
    assert "use a safetensors file, or the official release from a trusted source" in message
    error = raised(path)
    assert error.__cause__ is None and error.__context__ is None
    assert all("weights_only" not in str(e) for e in error_chain(error))
    with pytest.raises(UnsafeWeightsError):
        load_ultrapixel_modules(path)
    assert not marker.exists()

    # The file is really dangerous: the unsafe load the advice would lead to runs its command.
    with open(path, "rb") as fh:
        pickle.load(fh) if how == "pickle.dump" else torch.load(fh, weights_only=False)
    assert marker.read_text().strip() == "pwned"


# Not weights at all


def test_unknown_format(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    assert "is neither a PyTorch checkpoint nor a safetensors file (size 23 bytes" in failure(junk)
    page = tmp_path / "page.safetensors"
    page.write_bytes(b"<!DOCTYPE html>\n<html><body>Sign in to download</body></html>")
    assert "it looks like a web page saved in its place" in failure(page)


@pytest.mark.parametrize(("state", "problem"), [
    ([torch.ones(2)], "it holds a list, not a mapping"),
    ({"state_dict": {"a": torch.ones(2)}, "epoch": 3}, "its entry 'state_dict' holds a dict, not a tensor"),
    ({3: torch.ones(2)}, "its key 3 is not a name"),
])
def test_not_a_flat_state_dict(tmp_path, state, problem):
    path = write(tmp_path / "checkpoint.pt", "torch_zip", state)
    assert f"is not a flat {{name: tensor}} state dict: {problem}" in failure(path)


# Through the UltraPixel loader


def test_ultrapixel_loader_reports_damaged_files(tmp_path):
    good = write(tmp_path / "good.safetensors", "safetensors")
    path = tmp_path / "ultrapixel_t2i.safetensors"
    path.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(DamagedWeightsError, match=rf"file ultrapixel_t2i\.safetensors in {re.escape(str(tmp_path))} "
                                                  r"is damaged or incomplete \(size \d+ bytes, expected \d+ bytes\)"):
        load_ultrapixel_modules(path)
    with pytest.raises(DamagedWeightsError, match=r"in models/ultrapixel \(x\) is damaged"):
        load_ultrapixel_modules(path, folder="models/ultrapixel (x)")
