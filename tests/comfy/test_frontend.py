"""Shipped workflows in the real ComfyUI frontend (Debian chromium driven by Playwright)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from comfy_server import comfy_server, get_json
from conftest import PACK_ROOT, comfy_dir_option
from frontend import CHROMIUM, load_workflow, open_frontend, screenshot_graph

WORKFLOWS = sorted((PACK_ROOT / "workflows").glob("*.json"))


@pytest.fixture(scope="module")
def frontend(pytestconfig, tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium is not installed: tests/run.sh installs Debian's 'chromium' package")
    errors: list[str] = []
    with comfy_server(comfy_dir_option(pytestconfig).resolve(), tmp_path_factory.mktemp("frontend"),
                      {"ultrares": PACK_ROOT}) as (base, _):
        with open_frontend(base, errors) as page:
            yield base, page, errors


def screenshot_dir() -> Path:
    out = Path(os.environ.get("ULTRARES_ARTIFACTS", PACK_ROOT / "out")) / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_templates_are_served(frontend):
    base, _, _ = frontend
    listed = get_json(f"{base}/api/workflow_templates").get("ultrares", [])
    assert sorted(listed) == sorted(p.stem for p in WORKFLOWS)
    for name in listed:
        assert get_json(f"{base}/api/workflow_templates/ultrares/{name}.json")["nodes"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_loads_without_missing_nodes(frontend, path):
    _, page, errors = frontend
    errors.clear()
    workflow = json.loads(path.read_text())
    state = load_workflow(page, workflow)
    assert state["missing"] == []
    saved = {n["id"]: n for n in state["saved"]["nodes"]}
    for node in workflow["nodes"]:
        # The frontend keeps every widget value where the schema puts it (no shifted values).
        # (Newer frontends omit an empty list.)
        assert (saved[node["id"]].get("widgets_values") or []) == (node.get("widgets_values") or []), node["type"]
    screenshot_graph(page, screenshot_dir() / f"{path.stem}.png")
    assert not [e for e in errors if e.startswith("dialog")], errors
