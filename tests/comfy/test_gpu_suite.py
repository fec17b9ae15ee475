"""The GPU suite (``tests/benchmarks/gpu_suite.py``) as a CPU dry run, so it runs the moment a GPU does.

The dry run is the same script on the tests' tiny models at reduced sizes: every cell must run and
report finite figures, the time budget must stop it on time, and a cell that raises must make the
suite fail loudly (exit 1, the error in the report).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import pytest

from harness.comfy_host import PACK_ROOT, comfy_dir_option

SUITE = PACK_ROOT / "tests" / "benchmarks" / "gpu_suite.py"
CELLS = 14  # warm-up, Pixelsmith 2 modes × 3 sizes, FreeScale 5, UltraPixel 1, decode 1


def run_suite(pytestconfig, out, *args):
    env = {**os.environ, "ULTRARES_COMFYUI": str(comfy_dir_option(pytestconfig)), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(SUITE), "--dry-run", "--out", str(out), *args], env=env,
                          capture_output=True, text=True, timeout=600, cwd=SUITE.parent)


def test_dry_run_runs_every_cell_and_writes_the_report(pytestconfig, tmp_path):
    proc = run_suite(pytestconfig, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert report["dry_run"] is True and len(report["cells"]) == CELLS
    assert [c["status"] for c in report["cells"]] == ["ok"] * CELLS, [c["note"] for c in report["cells"]]
    for cell in report["cells"]:
        r = cell["result"]
        assert r["wall_s"] > 0, cell
        if cell["kind"] == "warm-up":
            continue
        assert math.isfinite(r["peak_rss_gib"]), cell
        if cell["kind"] != "decode":
            assert r["calls"] > 0 and 0 < r["model_fraction"] <= 1, cell
    by = {(c["kind"], c["size"]): c for c in report["cells"]}
    assert by[("pixelsmith-faithful", 8192)]["result"]["calls"] > by[("pixelsmith-fast", 8192)]["result"]["calls"], \
        "fast batches patches: fewer model calls than faithful"
    assert by[("pixelsmith-fast", 8192)]["run_px"] == 1024, "dry run at 1/8 of the size"
    names = [t["name"] for t in report["targets"]]
    assert len(names) == 6 and all(t["met"] is None for t in report["targets"]), "targets are judged on a GPU only"
    table = (tmp_path / "gpu_suite.md").read_text()
    assert table.count("\n| Pixelsmith fast | ") == 3 and "UltraPixel 4096²: peak device memory" in table


def test_an_exhausted_budget_ends_the_suite_with_a_report(pytestconfig, tmp_path):
    """A 1 s budget is gone before the first cell: every cell is skipped or stopped, the report is
    written and the suite exits 0 (running out of time is not an error)."""
    start = time.monotonic()
    proc = run_suite(pytestconfig, tmp_path, "--budget", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert len(report["cells"]) == CELLS
    assert {c["status"] for c in report["cells"]} <= {"skipped", "stopped"}, report["cells"]
    assert time.monotonic() - start < 120


def test_a_failing_cell_fails_the_suite_and_a_late_one_is_stopped(host):
    """In-process: an error is recorded with its traceback; the watchdog interrupts a cell at the deadline."""
    import comfy.model_management

    gpu_suite = pytest.importorskip("gpu_suite")

    def boom():
        raise RuntimeError("Expected all tensors to be on the same device")

    def slow():
        time.sleep(0.6)
        comfy.model_management.throw_exception_if_processing_interrupted()
        return {"wall_s": 0.6}

    cells = [gpu_suite.Cell("ok", "k", 1, 1.0, lambda: {"wall_s": 0.01}),
             gpu_suite.Cell("bad", "k", 1, 1.0, boom),
             gpu_suite.Cell("late", "slow", 1, 1.0, slow),
             gpu_suite.Cell("after", "k", 1, 1.0, lambda: {"wall_s": 0.01})]
    budget = gpu_suite.Budget(0.3)
    try:
        gpu_suite.run_cells(cells, budget)
    finally:
        budget.stop()
    assert [c.status for c in cells] == ["ok", "error", "stopped", "skipped"]
    assert "same device" in cells[1].note and "Traceback" in cells[1].result["traceback"]
    assert not comfy.model_management.processing_interrupted(), "the interrupt flag is cleared for the next run"
