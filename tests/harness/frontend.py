"""Drive the real ComfyUI frontend in Debian's chromium with Playwright (no browser download)."""
from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

from .comfy_server import get_json

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags for a sandbox with no network beyond loopback.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextlib.contextmanager
def open_frontend(base: str, errors: list[str] | None = None):
    """Yield a Playwright page with the ComfyUI app loaded from the server at ``base``."""
    from playwright.sync_api import sync_playwright

    # The missing-models warning is off here: the SDXL and Stable Cascade templates name files the test
    # host does not have (the test of that warning turns it on in the page).
    settings = {"Comfy.TutorialCompleted": True, "LiteGraph.Canvas.MinFontSizeForLOD": 0,
                "Comfy.Workflow.ShowMissingModelsWarning": False}
    for key, value in settings.items():
        get_json(f"{base}/api/settings/{key}", value)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            if errors is not None:
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on("dialog", lambda d: (errors.append("dialog: " + d.message), d.dismiss()))
            page.goto(base)
            wait_for_app(page)
            yield page
        finally:
            browser.close()


def wait_for_app(page) -> None:
    """Wait until the frontend's app and graph are up (after a page load or reload)."""
    page.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=90_000)


def load_workflow(page, workflow: dict) -> dict:
    """Load a UI-format workflow; return missing node types and the graph as the frontend saves it."""
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
    state = page.evaluate("""() => ({
        missing: app.graph._nodes.filter(n => !LiteGraph.registered_node_types[n.type]).map(n => n.type),
        saved: JSON.stringify(app.graph.serialize()),
    })""")
    return {"missing": state["missing"], "saved": json.loads(state["saved"])}


def screenshot_graph(page, path: Path, crop: bool = False) -> None:
    """Fit the graph in view and screenshot the page, or with ``crop`` only the nodes' box."""
    page.evaluate("() => app.extensionManager.command.execute('Comfy.Canvas.FitView')")
    page.wait_for_timeout(300)
    clip = None
    if crop:
        clip = page.evaluate("""() => {
            const c = app.canvas, ds = c.ds, r = c.canvas.getBoundingClientRect(), title = 30;
            const xs = [], ys = [];
            for (const n of app.graph._nodes) {
                xs.push(n.pos[0], n.pos[0] + n.size[0]); ys.push(n.pos[1] - title, n.pos[1] + n.size[1]);
            }
            const sx = v => (v + ds.offset[0]) * ds.scale + r.left, sy = v => (v + ds.offset[1]) * ds.scale + r.top;
            const x0 = Math.max(r.left, sx(Math.min(...xs)) - 12), y0 = Math.max(r.top, sy(Math.min(...ys)) - 12);
            const x1 = Math.min(r.right, sx(Math.max(...xs)) + 12), y1 = Math.min(r.bottom, sy(Math.max(...ys)) + 12);
            return {x: x0, y: y0, width: x1 - x0, height: y1 - y0};
        }""")
    page.screenshot(path=str(path), clip=clip)
