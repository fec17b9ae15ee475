"""Damaged weights through the real executor: the UltraPixel Loader and the Demo Model say what to do.

Each case writes a damaged file (truncated safetensors, truncated pickles, a Git LFS pointer, a
pickle that would run a shell command) where the node reads it and runs the node's graph: the
error names the node input and the file, says to re-download it (or why it is refused), and never
passes on torch's advice to load with ``weights_only=False``. The executor cache is reset around
every run, so no case is answered with an earlier case's result.
"""
from __future__ import annotations

import os
import pickle
import re
import shlex
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from harness.comfy_host import WorkflowError
from harness.ultrapixel_graphs import graph_builder

LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\n"
               b"oid sha256:5f2b6d1e0c9a8b7f6e5d4c3b2a1908f7e6d5c4b3a29180f7e6d5c4b3a2918070\n"
               b"size 7639206\n")


def fixture_module(host):
    return host.module_of("UltraResTest_RecordUltraPixel")


def run_failing(host, graph: dict) -> str:
    """The executor's error for ``graph`` (fresh caches before and after)."""
    host.reset_cache()
    try:
        with pytest.raises(WorkflowError) as info:
            host.run(graph)
    finally:
        host.reset_cache()
    message = str(info.value)
    assert "weights_only=False" not in message and "weights_only" not in message
    return message


class RunsAShellCommand:
    """Unpickling this runs ``echo pwned > marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"echo pwned > {shlex.quote(str(self.marker))}",)


# UltraPixel Loader


def loader_graph(name: str) -> dict:
    g = graph_builder()
    ld = g.node("UltraRes_UltraPixelLoader", ultrapixel_name=name, weight_dtype="default")
    g.node("UltraResTest_RecordUltraPixel", tag="loaded", ultrapixel_model=ld.out(0))
    return g.finalize()


@pytest.fixture
def bad_file(host):
    """``make(name, bytes)`` writes a file into the registered models/ultrapixel folder; removed after."""
    written: list[str] = []
    folder = fixture_module(host).model_folder()

    def make(name: str, data: bytes) -> str:
        path = os.path.join(folder, name)
        with open(path, "wb") as fh:
            fh.write(data)
        written.append(path)
        return path

    yield make
    for path in written:
        os.remove(path)


def tiny_bytes(host, tmp_path: Path, fmt: str) -> bytes:
    """A good tiny UltraPixel file: "safetensors", "zip" (torch.save) or "legacy" (old torch.save)."""
    state = fixture_module(host).tiny_ultrapixel_state()
    path = tmp_path / f"tiny.{fmt}"
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path, _use_new_zipfile_serialization=fmt == "zip")
    return path.read_bytes()


def loader_message(host, name: str) -> str:
    message = run_failing(host, loader_graph(name))
    folder = fixture_module(host).model_folder()
    assert f"ultrapixel_name: file {name} in models/ultrapixel ({folder})" in message, message
    return message


@pytest.mark.parametrize("fmt", ["safetensors", "zip", "legacy"])
def test_loader_names_a_truncated_file_and_says_re_download(host, bad_file, tmp_path, fmt):
    data = tiny_bytes(host, tmp_path, fmt)
    name = f"bad_truncated_{fmt}.safetensors"
    size = len(data) * 2 // 3
    bad_file(name, data[:size])
    message = loader_message(host, name)
    assert f"is damaged or incomplete (size {size} bytes" in message
    assert "): re-download it" in message
    if fmt == "safetensors":
        assert f"expected {len(data)} bytes" in message
        assert "incomplete metadata" not in message and "header too large" not in message
    elif fmt == "zip":
        assert "the zip archive's end record is missing" in message
        assert "central directory" not in message


def test_loader_names_a_git_lfs_pointer(host, bad_file):
    bad_file("bad_lfs_ultrapixel_t2i.safetensors", LFS_POINTER)
    message = loader_message(host, "bad_lfs_ultrapixel_t2i.safetensors")
    assert f"is a Git LFS pointer (size {len(LFS_POINTER)} bytes), not the weights" in message
    assert "the real file is 7639206 bytes" in message and "`git lfs pull`" in message


@pytest.mark.parametrize("how", ["pickle.dump", "torch_zip"])
def test_loader_refuses_a_pickle_that_would_run_code(host, bad_file, tmp_path, how):
    marker = tmp_path / "pwned"
    payload = RunsAShellCommand(marker)
    name = f"bad_code_{how.replace('.', '_')}.safetensors"
    path = bad_file(name, b"")
    if how == "pickle.dump":
        with open(path, "wb") as fh:
            pickle.dump(payload, fh)
    else:
        torch.save({**fixture_module(host).tiny_ultrapixel_state(), "extra": payload}, path)
    message = loader_message(host, name)
    assert not marker.exists(), "the file's code ran"
    assert re.search(r"holds Python objects other than tensors \(it references (posix|nt)\.system, that is "
                     r"os\.system\)", message), message
    assert "UltraRes refuses to load it because unpickling it could run code" in message


# Demo Model


def demo_graph() -> dict:
    return {
        "model": {"class_type": "UltraRes_DemoModel", "inputs": {}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}},
        "image": {"class_type": "VAEDecode", "inputs": {"samples": ["empty", 0], "vae": ["model", 1]}},
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["image", 0]}},
    }


def demo_message(host, monkeypatch, path: Path) -> str:
    monkeypatch.setattr(host.module_of("UltraRes_DemoModel"), "WEIGHTS", path)
    message = run_failing(host, demo_graph())
    assert f"file {path.name} in the UltraRes pack's demo folder ({path.parent})" in message, message
    assert "reinstall the pack" in message
    return message


def test_demo_model_names_a_git_lfs_pointer(host, monkeypatch, tmp_path):
    path = tmp_path / "ultrares_demo.safetensors"
    path.write_bytes(LFS_POINTER)
    message = demo_message(host, monkeypatch, path)
    assert f"is a Git LFS pointer (size {len(LFS_POINTER)} bytes), not the weights" in message
    assert "the real file is 7639206 bytes" in message and "`git lfs pull`" in message


def test_demo_model_names_a_truncated_file(host, monkeypatch, tmp_path):
    real = host.module_of("UltraRes_DemoModel").WEIGHTS.read_bytes()
    path = tmp_path / "ultrares_demo.safetensors"
    size = len(real) // 2
    path.write_bytes(real[:size])
    message = demo_message(host, monkeypatch, path)
    assert f"is damaged or incomplete (size {size} bytes, expected {len(real)} bytes): re-download it" in message


def test_demo_reader_returns_the_files_tensors(host):
    nodes = host.module_of("UltraRes_DemoModel")
    with safe_open(str(nodes.WEIGHTS), framework="pt", device="cpu") as f:
        keys = list(f.keys())
        for prefix in ("unet.", "vae.", "text."):
            ours = nodes._read(prefix)
            theirs = {k[len(prefix):]: f.get_tensor(k) for k in keys if k.startswith(prefix)}
            assert ours.keys() == theirs.keys() and ours, prefix
            assert all(ours[k].dtype == v.dtype and torch.equal(ours[k], v) for k, v in theirs.items()), prefix
