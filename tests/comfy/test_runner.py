"""The headless runner: UI-format workflows convert and execute; bad input gets clear errors."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.comfy_host import PACK_ROOT, WorkflowError, comfy_dir_option
from harness.demo_loaders import swap_demo_loaders
from harness.graphs import txt2img
from harness.pack import WORKFLOW_DIR, WORKFLOWS
from harness.workflow_format import WorkflowFormatError, load_prompt, ui_to_api

RUNNER = PACK_ROOT / "scripts" / "run_workflow.py"


SIZE_INPUT = re.compile(r"(^|_)(width|height|size)$")
KEEP = {"lr_size"}  # a model's native size, not a picture size
SIZE_LIST = re.compile(r"^\s*\d+(\s*x\s*\d+)?(\s*[,;]\s*\d+(\s*x\s*\d+)?)*\s*$")


def size_list(value) -> bool:
    """A string of picture sizes such as "2048, 4096" or "2048x1536" (every number at least 64 px, so a
    combo value such as a tiny VAE's "16" channels is not one)."""
    return (isinstance(value, str) and SIZE_LIST.match(value) is not None
            and all(int(x) >= 64 for x in re.findall(r"\d+", value)))


def picture_size(name: str, value) -> bool:
    """An int input holding a picture size in px (named *width/*height/*size, not ``KEEP``)."""
    return (isinstance(value, int) and not isinstance(value, bool) and SIZE_INPUT.search(name) is not None
            and name not in KEEP and value >= 64)


def shrink(prompt: dict, max_px: int = 256, steps: int = 2) -> dict:
    """The same graph at a test size: every pixel size scaled by one factor so the largest is
    at most ``max_px`` (ints named *width/*height/*size and size-list strings such as
    "1024, 2048, 4096"), a tile ``overlap`` by the same factor (it stays below its tile, which is at
    least 64 px), step counts cut to ``steps`` and Pixelsmith's ``band`` to 3 (the shrunk
    latents can be 8 px, and the band must stay below half the patch clamped to them). UltraPixel's
    ``lr_size`` is the model's native size, not a picture size, and stays. Nothing else is touched."""
    out = json.loads(json.dumps(prompt))
    sizes = [v for n in out.values() for k, v in n["inputs"].items() if picture_size(k, v)]
    sizes += [int(x) for n in out.values() for v in n["inputs"].values() if size_list(v)
              for x in re.findall(r"\d+", v)]
    factor = max(1, -(-max(sizes, default=0) // max_px))

    def shrunk(v: int) -> int:
        return v // factor // 8 * 8

    def scaled(v: int) -> int:
        return max(64, shrunk(v))

    for node in out.values():
        for k, v in node["inputs"].items():
            if picture_size(k, v):
                node["inputs"][k] = scaled(v)
            elif size_list(v):
                node["inputs"][k] = re.sub(r"\d+", lambda m: str(scaled(int(m.group()))), v)
            elif k == "overlap" and isinstance(v, int):
                node["inputs"][k] = shrunk(v)
            elif k == "steps" and isinstance(v, int):
                node["inputs"][k] = min(v, steps)
            elif k == "band" and isinstance(v, int):
                node["inputs"][k] = min(v, 3)
    return out


def test_workflows_are_shipped():
    assert WORKFLOWS, "example_workflows/ holds at least one workflow"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_shipped_workflow_converts_and_runs_on_demo_models(host, path):
    prompt = load_prompt(path, host)
    assert any(n["class_type"].startswith("UltraRes_") for n in prompt.values())
    result = host.run(shrink(swap_demo_loaders(prompt)))
    images = [img for out in result.outputs.values() for img in out.get("images", [])]
    assert images and images[0]["type"] == "output"


def test_ui_conversion_maps_widgets_links_and_seed_control(host):
    path = WORKFLOW_DIR / "FreeScale Scale Fusion - SDXL at 2048 px with any sampler.json"
    prompt = load_prompt(path, host)
    ks = next(n for n in prompt.values() if n["class_type"] == "KSampler")["inputs"]
    # widgets_values = [seed, "fixed", steps, cfg, sampler, scheduler, denoise]: the control
    # widget after the seed must be skipped, not shift everything after it.
    assert (ks["seed"], ks["steps"], ks["cfg"], ks["sampler_name"], ks["scheduler"]) == \
        (123, 50, 7.5, "euler", "ddim_uniform")
    assert isinstance(ks["model"], list) and isinstance(ks["positive"], list)


def test_missing_node_type_is_named(host):
    ui = json.loads((WORKFLOW_DIR / "FreeScale Scale Fusion - SDXL at 2048 px with any sampler.json").read_text())
    ui["nodes"][0]["type"] = "SomePackThatIsNotInstalled"
    with pytest.raises(WorkflowFormatError, match="SomePackThatIsNotInstalled"):
        ui_to_api(ui, host.node_classes)


def test_invalid_input_is_named(host):
    graph, ids = txt2img()
    graph[ids["ksampler"]]["inputs"]["steps"] = -3
    with pytest.raises(WorkflowError, match="steps"):
        host.run(graph)


def run_cli(pytestconfig, tmp_path, prompt: dict, *args):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(prompt))
    return subprocess.run([sys.executable, str(RUNNER), str(wf), "--out", str(tmp_path / "out"),
                           "--comfyui", str(comfy_dir_option(pytestconfig)), *args],
                          capture_output=True, text=True, timeout=300)


def test_cli_writes_images_and_reports_missing_models(pytestconfig, tmp_path):
    graph, _ = txt2img(steps=1)
    ok = run_cli(pytestconfig, tmp_path, graph, "--demo")
    assert ok.returncode == 0, ok.stderr[-2000:]
    files = [Path(line) for line in ok.stdout.splitlines() if line.endswith(".png")]
    assert files and all(f.is_file() and f.parent == tmp_path / "out" for f in files)

    real = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
            "2": {"class_type": "CheckpointSave", "inputs": {"model": ["1", 0], "clip": ["1", 1],
                                                              "vae": ["1", 2], "filename_prefix": "x"}}}
    missing = run_cli(pytestconfig, tmp_path, real)
    assert missing.returncode == 2
    assert "sd_xl_base_1.0.safetensors" in missing.stderr and "--demo" in missing.stderr
