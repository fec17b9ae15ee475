"""The pack loaded by a real ComfyUI server (main.py), as users run it, seen through its HTTP API."""
from __future__ import annotations

import pytest

from harness.comfy_host import PACK_ROOT, comfy_dir_option
from harness.comfy_server import comfy_server, get_json


@pytest.fixture(scope="module")
def server(pytestconfig, tmp_path_factory):
    with comfy_server(comfy_dir_option(pytestconfig).resolve(), tmp_path_factory.mktemp("server"),
                      {"ultrares": PACK_ROOT}) as running:
        yield running


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
