"""Shipped workflows in the real ComfyUI frontend (Debian chromium driven by Playwright)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from comfy_server import comfy_server, get_json
from conftest import PACK_ROOT, comfy_dir_option

WORKFLOWS = sorted((PACK_ROOT / "workflows").glob("*.json"))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags for a sandbox with no network beyond loopback (see tests/run.sh, which installs chromium).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def frontend(pytestconfig, tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium is not installed: tests/run.sh installs Debian's 'chromium' package")
    from playwright.sync_api import sync_playwright

    with comfy_server(comfy_dir_option(pytestconfig).resolve(), tmp_path_factory.mktemp("frontend"),
                      {"ultrares": PACK_ROOT}) as (base, work):
        for key, value in {"Comfy.TutorialCompleted": True, "LiteGraph.Canvas.MinFontSizeForLOD": 0}.items():
            get_json(f"{base}/api/settings/{key}", value)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("dialog", lambda d: (errors.append("dialog: " + d.message), d.dismiss()))
            page.goto(base)
            page.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=90_000)
            yield base, page, errors
            browser.close()


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
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
    state = page.evaluate("""() => ({
        missing: app.graph._nodes.filter(n => !LiteGraph.registered_node_types[n.type]).map(n => n.type),
        saved: JSON.stringify(app.graph.serialize()),
    })""")
    assert state["missing"] == []
    saved = {n["id"]: n for n in json.loads(state["saved"])["nodes"]}
    for node in workflow["nodes"]:
        # The frontend keeps every widget value where the schema puts it (no shifted values).
        assert saved[node["id"]].get("widgets_values") == node.get("widgets_values"), node["type"]
    page.evaluate("() => app.extensionManager.command.execute('Comfy.Canvas.FitView')")
    page.wait_for_timeout(300)
    page.screenshot(path=str(screenshot_dir() / f"{path.stem}.png"))
    assert not [e for e in errors if "dialog" in e], errors
