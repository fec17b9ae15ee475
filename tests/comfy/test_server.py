"""The pack loaded by a real ComfyUI server (main.py), as users run it, seen through its HTTP API."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import PACK_ROOT, comfy_dir_option


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


@pytest.fixture(scope="module")
def server(pytestconfig, tmp_path_factory):
    comfy = comfy_dir_option(pytestconfig).resolve()
    work = tmp_path_factory.mktemp("server")
    for d in ("custom_nodes", "output", "user", "temp"):
        (work / d).mkdir()
    (work / "custom_nodes" / "ultrares").symlink_to(PACK_ROOT, target_is_directory=True)
    config = work / "extra_model_paths.yaml"
    config.write_text(f"ultrares_test:\n    custom_nodes: {work / 'custom_nodes'}\n")
    port = free_port()
    log = open(work / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "main.py", "--cpu", "--disable-api-nodes", "--listen", "127.0.0.1",
         "--port", str(port), "--extra-model-paths-config", str(config),
         "--output-directory", str(work / "output"), "--user-directory", str(work / "user"),
         "--temp-directory", str(work / "temp"), "--database-url", "sqlite:///:memory:"],
        cwd=comfy, stdout=log, stderr=subprocess.STDOUT, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                get_json(base + "/system_stats")
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("ComfyUI server did not start:\n" + (work / "server.log").read_text()[-3000:])
                time.sleep(0.5)
        yield base, work
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_pack_nodes_in_object_info(server):
    base, work = server
    info = get_json(base + "/object_info")
    ours = {k: v for k, v in info.items() if k.startswith("UltraRes_")}
    assert ours, "no UltraRes node in /object_info:\n" + (work / "server.log").read_text()[-3000:]
    for node_id, node in ours.items():
        assert node["category"].startswith("UltraRes/"), node_id
        assert node["description"], node_id
        for section in ("required", "optional"):
            for name, spec in node["input"].get(section, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert all(node["output_tooltips"]), node_id
    assert not any(k.startswith("UltraResTest_") for k in info), "test nodes never ship"


def test_server_log_has_no_import_failure(server):
    _, work = server
    log = (work / "server.log").read_text()
    assert "IMPORT FAILED" not in log
