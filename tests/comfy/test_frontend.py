"""Shipped workflows in the real ComfyUI frontend (Debian chromium driven by Playwright)."""
from __future__ import annotations

import json
import os
import re
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from harness.comfy_host import PACK_ROOT, comfy_dir_option
from harness.comfy_server import comfy_server, get_json
from harness.frontend import CHROMIUM, load_workflow, open_frontend, screenshot_graph, wait_for_app
from harness.pack import DEMO_WORKFLOW, WORKFLOWS
from harness.workflow_format import model_files


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
        assert get_json(f"{base}/api/workflow_templates/ultrares/{urllib.parse.quote(name)}.json")["nodes"]


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


def graph_to_client(page, node_id: int, dx: float, dy: float) -> tuple[float, float]:
    """Page coordinates of a point given relative to a node's position, in graph units."""
    return tuple(page.evaluate("""([id, dx, dy]) => {
        const n = app.graph.getNodeById(id), ds = app.canvas.ds;
        const r = app.canvas.canvas.getBoundingClientRect();
        return [(n.pos[0] + dx + ds.offset[0]) * ds.scale + r.left, (n.pos[1] + dy + ds.offset[1]) * ds.scale + r.top];
    }""", [node_id, dx, dy]))


def hover_tooltip(page, x: float, y: float) -> str:
    """Move the mouse to (x, y), wait for the frontend's node tooltip and return its text."""
    page.mouse.move(x - 30, y - 30)
    page.mouse.move(x, y, steps=5)
    tooltip = page.locator(".node-tooltip")
    tooltip.wait_for(state="visible", timeout=10_000)
    return tooltip.inner_text()


def test_templates_browser_lists_and_opens_the_pack_templates(frontend):
    base, page, errors = frontend
    errors.clear()
    page.evaluate("() => app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("ultrares", exact=True).click()
    for path in WORKFLOWS:
        dialog.get_by_text(path.stem, exact=True).wait_for(timeout=10_000)
    assert f"Showing {len(WORKFLOWS)} of {len(WORKFLOWS)} templates" in dialog.inner_text()
    # The cards show their pictures: the same-name 640x480 JPEG of every template is served, and
    # the cards in view have loaded theirs.
    for path in WORKFLOWS:
        with urllib.request.urlopen(f"{base}/api/workflow_templates/ultrares/{urllib.parse.quote(path.stem)}.jpg",
                                    timeout=10) as r:
            assert r.read(3) == b"\xff\xd8\xff", path.stem
    page.wait_for_function("""(n) => [...document.querySelectorAll('[role=dialog] img')]
        .filter(i => i.complete && i.naturalWidth === 640).length >= n""", arg=min(8, len(WORKFLOWS)), timeout=20_000)
    screenshot_graph(page, screenshot_dir() / "templates_browser_ultrares.png")
    # Opening a card loads that workflow, as a user does.
    dialog.get_by_text(DEMO_WORKFLOW.stem, exact=True).click()
    page.wait_for_function("() => app.graph._nodes.some(n => n.type === 'UltraRes_DemoModel')", timeout=30_000)
    assert page.get_by_role("dialog").count() == 0 or not page.get_by_role("dialog").is_visible()
    assert not [e for e in errors if e.startswith("dialog")], errors


def test_node_description_and_input_tooltip_are_shown_on_hover(frontend):
    base, page, _ = frontend
    load_workflow(page, json.loads(DEMO_WORKFLOW.read_text()))
    info = get_json(f"{base}/api/object_info/UltraRes_PixelsmithUpscale")["UltraRes_PixelsmithUpscale"]
    node_id = page.evaluate("() => app.graph._nodes.find(n => n.type === 'UltraRes_PixelsmithUpscale').id")
    # Zoom onto the node so its title and first input are large targets.
    page.evaluate("""(id) => { const n = app.graph.getNodeById(id), ds = app.canvas.ds;
        ds.scale = 1.5; ds.offset = [200 / 1.5 - n.pos[0], 250 / 1.5 - n.pos[1]]; app.canvas.setDirty(true, true); }""",
                  node_id)
    page.wait_for_timeout(300)
    title = hover_tooltip(page, *graph_to_client(page, node_id, 60, -15))
    assert title.strip() == info["description"].strip()
    slot = page.evaluate("(id) => app.graph.getNodeById(id).getConnectionPos(true, 0)", node_id)
    pos = page.evaluate("(id) => app.graph.getNodeById(id).pos", node_id)
    first_input = page.evaluate("(id) => app.graph.getNodeById(id).inputs[0].name", node_id)
    tip = hover_tooltip(page, *graph_to_client(page, node_id, slot[0] - pos[0] + 8, slot[1] - pos[1]))
    required = {**info["input"]["required"], **info["input"].get("optional", {})}
    assert tip.strip() == required[first_input][1]["tooltip"].strip()
    page.screenshot(path=str(screenshot_dir() / "tooltip_pixelsmith_upscale.png"))


def test_demo_workflow_queued_from_the_ui_shows_images_and_pack_progress(frontend):
    _, page, errors = frontend
    errors.clear()
    workflow = json.loads(DEMO_WORKFLOW.read_text())
    for node in workflow["nodes"]:  # fewer steps: the same graph, quicker on a CPU
        if node["type"] in ("KSampler", "UltraRes_PixelsmithUpscale", "UltraRes_FreeScaleUpscale"):
            values = node["widgets_values"]
            i = next(i for i, v in enumerate(values) if v == "fixed") + 1  # steps follow the seed control
            values[i] = 4
            if node["type"] == "UltraRes_PixelsmithUpscale":
                values[i + 2] = 2  # slider
    load_workflow(page, workflow)
    page.evaluate("""() => {
        window.__ultrares = {progress: [], executed: [], done: null};
        const types = id => app.graph.getNodeById(Number(id))?.type;
        app.api.addEventListener('progress', e => __ultrares.progress.push(
            {type: types(e.detail.node), value: e.detail.value, max: e.detail.max}));
        app.api.addEventListener('executed', e => __ultrares.executed.push(types(e.detail.node)));
        app.api.addEventListener('execution_success', () => __ultrares.done = 'success');
        app.api.addEventListener('execution_error', e => __ultrares.done = 'error: ' + e.detail.exception_message);
    }""")
    page.locator('[data-testid="queue-button"]').first.click()
    page.wait_for_function("() => window.__ultrares.done", timeout=600_000, polling=500)
    state = page.evaluate("() => window.__ultrares")
    assert state["done"] == "success", state["done"]
    saves = [n["id"] for n in workflow["nodes"] if n["type"] == "SaveImage"]
    assert state["executed"].count("SaveImage") == len(saves)
    for node_type in ("UltraRes_PixelsmithUpscale", "UltraRes_FreeScaleUpscale"):
        reports = [p for p in state["progress"] if p["type"] == node_type]
        assert reports and reports[-1]["value"] == reports[-1]["max"] > 1, (node_type, reports[-3:])
    # Every Save Image node shows its image (loaded by the browser from the server). The frontend
    # loads a node's images when it draws the node, so the whole graph is brought into view first
    # (the UltraPixel group lies below the workflow's saved view).
    page.evaluate("() => app.extensionManager.command.execute('Comfy.Canvas.FitView')")
    page.wait_for_function("""(ids) => ids.every(id => {
        const imgs = app.graph.getNodeById(id).imgs;
        return imgs && imgs.length && imgs.every(i => i.complete && i.naturalWidth > 0);
    })""", arg=saves, timeout=30_000)
    screenshot_graph(page, screenshot_dir() / "demo_workflow_after_run.png")
    assert not [e for e in errors if e.startswith("dialog")], errors


PACK_NODES = sorted(p.stem for p in (PACK_ROOT / "web" / "docs").glob("UltraRes_*.md"))


def test_every_pack_node_has_a_help_page_with_its_pictures(frontend):
    base, _, _ = frontend
    info = get_json(f"{base}/api/object_info")
    ours = sorted(k for k, v in info.items() if v["python_module"] == "custom_nodes.ultrares")
    assert ours and PACK_NODES == ours, "one web/docs/<node_id>.md per node"
    for node_id in ours:
        # The URL the frontend's help panel asks for (folder name of the pack, then the node id).
        with urllib.request.urlopen(f"{base}/extensions/ultrares/docs/{node_id}.md", timeout=10) as r:
            page = r.read().decode()
        assert page.startswith("# "), node_id
        for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page):
            with urllib.request.urlopen(f"{base}/extensions/ultrares/docs/{image}", timeout=10) as r:
                assert r.status == 200 and r.read(4) in (b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xe1", b"\x89PNG"), image


def test_help_panel_shows_the_pack_page_for_a_selected_node(frontend):
    _, page, errors = frontend
    load_workflow(page, json.loads(DEMO_WORKFLOW.read_text()))
    node_id = page.evaluate("() => app.graph._nodes.find(n => n.type === 'UltraRes_PixelsmithUpscale').id")
    page.evaluate("""(id) => { const n = app.graph.getNodeById(id), ds = app.canvas.ds;
        ds.scale = 1.0; ds.offset = [500 - n.pos[0], 300 - n.pos[1]]; app.canvas.setDirty(true, true); }""", node_id)
    page.wait_for_timeout(300)
    page.mouse.click(*graph_to_client(page, node_id, 60, -15))  # select it by its title, as a user does
    page.locator('[data-testid="info-button"]').first.click(timeout=10_000)
    heading = (PACK_ROOT / "web" / "docs" / "UltraRes_PixelsmithUpscale.md").read_text().splitlines()[0][2:].strip()
    panel = page.locator(".markdown-content, .node-help-content, [class*='help']").filter(has_text=heading).first
    panel.wait_for(state="visible", timeout=15_000)
    page.wait_for_timeout(500)  # let the page's pictures load
    page.screenshot(path=str(screenshot_dir() / "help_panel_pixelsmith_upscale.png"))


UP_WORKFLOW = next(p for p in WORKFLOWS if p.stem.startswith("UltraPixel - ") and "4096" in p.stem)


def test_missing_models_are_all_named_with_their_download_on_load(frontend):
    _, page, _ = frontend
    workflow = json.loads(UP_WORKFLOW.read_text())
    warning = "Comfy.Workflow.ShowMissingModelsWarning"
    page.evaluate("(key) => app.extensionManager.setting.set(key, true)", warning)
    try:
        page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
        dialog = page.locator('[role=dialog][aria-labelledby="global-missing-models-warning"]')
        dialog.wait_for(state="visible", timeout=15_000)
        text = dialog.inner_text()
        files = model_files(workflow)
        assert len(files) == 5 and all(name in text for name in files), text
        page.screenshot(path=str(screenshot_dir() / "missing_models_ultrapixel_4096.png"))
        page.keyboard.press("Escape")
        dialog.wait_for(state="hidden", timeout=10_000)
    finally:
        page.evaluate("(key) => app.extensionManager.setting.set(key, false)", warning)


BLUEPRINTS = sorted((PACK_ROOT / "subgraphs").glob("*.json"))


def test_blueprints_are_served_and_load_as_one_node_of_pack_nodes(frontend):
    base, page, errors = frontend
    served = get_json(f"{base}/api/global_subgraphs")
    assert sorted(e["name"] for e in served.values()) == sorted(p.stem for p in BLUEPRINTS)
    assert len(BLUEPRINTS) >= 3
    for path in BLUEPRINTS:
        errors.clear()
        state = page.evaluate("""async (wf) => { await app.loadGraphData(wf);
            const outer = app.graph._nodes, inner = outer[0].subgraph?.nodes ?? [];
            return {outer: outer.length, inner: inner.map(n => n.type), desc: wf.extra.BlueprintDescription,
                    missing: inner.filter(n => !LiteGraph.registered_node_types[n.type]).map(n => n.type)}; }""",
                              json.loads(path.read_text()))
        assert state["outer"] == 1 and len(state["inner"]) >= 2 and not state["missing"], (path.stem, state)
        assert any(t.startswith("UltraRes_") for t in state["inner"]) and state["desc"], path.stem
        assert not [e for e in errors if e.startswith("dialog")], errors
        # The frontend validates a loaded workflow against its schema and says so in a toast.
        toasts = page.evaluate("() => [...document.querySelectorAll('.p-toast')].map(t => t.innerText).join(' ')")
        assert "Invalid workflow" not in toasts, (path.stem, toasts)
    # The node library lists them in its "Subgraph Blueprints" folder (from a fresh page: an earlier
    # test may have left the library open on a help page).
    page.reload()
    wait_for_app(page)
    page.evaluate("() => app.extensionManager.command.execute('Workspace.ToggleSidebarTab.node-library')")
    page.get_by_text("Subgraph Blueprints").first.click(timeout=10_000)
    for path in BLUEPRINTS:
        page.get_by_text(path.stem).first.wait_for(timeout=10_000)
    page.screenshot(path=str(screenshot_dir() / "blueprints_in_node_library.png"))
    page.evaluate("() => app.extensionManager.command.execute('Workspace.ToggleSidebarTab.node-library')")
