"""UltraRes GPU suite: every headline figure of the pack, on full-size random models, in one command.

    python tests/benchmarks/gpu_suite.py [--comfyui DIR] [--out DIR] [--budget 480] [--dry-run]

On a CUDA device it builds randomly initialised **full-size** models from ComfyUI's own model
classes and configs (no weight file is read or downloaded): the SDXL base UNet (2.6 B, fp16), the
SDXL VAE and Stable Cascade stage C (3.6 B, bf16) with full-size UltraPixel modules (bf16). It then
runs, within a time budget it enforces itself:

* Pixelsmith ``fast`` and ``faithful`` at 2048², 4096², 8192² (few steps): wall time, model calls,
  the fraction of the wall time spent inside the diffusion model, peak device memory;
* one FreeScale stage (self-cascade + Scale Fusion + restrained dilation + FreeU) at 4096², on the
  unpatched model (``plain``), with Scale Fusion ``normal`` and ``fast``, then 8192² ``fast`` and
  ``plain``: peak device memory and seconds per step;
* UltraPixel on stage C at 4096² (LR pass, then the HR pass with the four modules): peak device
  memory, seconds per HR step;
* Save Large Image's tiled decode of a 16384² px image (a 2048² latent) with the full-size SDXL VAE
  into an uncompressed BigTIFF: peak device memory and RAM.

Cells run in that order. Before each cell the suite estimates its time from the cells already
measured and skips it when it would not fit; a watchdog interrupts a running cell at the deadline
(ComfyUI's own interrupt, checked at every model call and VAE tile), so the suite ends within the
budget. It writes ``gpu_suite.json`` and ``gpu_suite.md`` (a table, then the targets: Pixelsmith
peak memory 8192² ÷ 2048² ≤ 1.10, model time ≥ 95 % of wall in ``fast``, ``fast`` ≥ 1.8× ``faithful``
at 4096², FreeScale 8192² fast ≤ 40 GiB, UltraPixel 4096² ≤ 16 GiB) to ``--out``, and exits 1 when
any cell raised (a dtype, device-placement, pinned-memory or layout error on CUDA), printing it.

``--dry-run`` (the default without CUDA) runs the same cells on the CPU with the tests' tiny models
at 1/8 of the sizes (1/32 for the decode), so the script is exercised by the test suite and never rots; its memory
column is then the process's peak RSS and the targets are not judged.

The ComfyUI folder comes from ``--comfyui`` or ``$ULTRARES_COMFYUI``; the Python running the script
must hold ComfyUI's requirements and, on a GPU, a CUDA build of torch.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import importlib
import json
import math
import os
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import bench_freescale
import bench_pixelsmith
import bench_ultrapixel
import torch

from bench_common import Meter, boot, sdxl_model

GIB = float(1 << 30)
GPU_SIZES = {"pixelsmith": (2048, 4096, 8192), "freescale": (4096, 8192), "ultrapixel": (4096,), "decode": (16384,)}
DRY_RUN_DIVISOR = 8
DRY_RUN_DECODE_DIVISOR = 32  # the tiny TAESD costs about as much per pixel as the real VAE on a CPU
SDXL_VAE_DDCONFIG = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3,
                     "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [],
                     "dropout": 0.0}


class BudgetExhausted(Exception):
    """A cell was stopped, or not started, because the suite's time budget ran out."""


class Budget:
    """The suite's deadline: estimates per cell kind, and a watchdog that interrupts at the deadline."""

    def __init__(self, seconds: float):
        self.start = time.monotonic()
        self.deadline = self.start + seconds
        self.rates: dict[str, float] = {}  # seconds per unit of work, per cell kind
        import comfy.model_management

        self._timer = threading.Timer(seconds, comfy.model_management.interrupt_current_processing, args=(True,))
        self._timer.daemon = True
        self._timer.start()

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def check(self, kind: str, work: float) -> None:
        """Raise BudgetExhausted when a cell of ``work`` units would not end before the deadline."""
        rate = self.rates.get(kind)
        estimate = rate * work if rate is not None else 0.0
        if self.left() <= 0 or estimate > self.left():
            raise BudgetExhausted(f"skipped: needs ~{estimate:.0f} s, {max(0.0, self.left()):.0f} s left")

    def learn(self, kind: str, work: float, seconds: float) -> None:
        self.rates[kind] = max(self.rates.get(kind, 0.0), seconds / max(work, 1e-9))

    def stop(self) -> None:
        self._timer.cancel()


@dataclasses.dataclass
class Cell:
    name: str
    kind: str
    size: int
    work: float
    run: Callable[[], dict] | None
    run_px: int = 0  # the side actually sampled (``size`` ÷ the dry-run divisor)
    status: str = "pending"
    result: dict = dataclasses.field(default_factory=dict)
    note: str = ""


class DevicePeak:
    """Peak device memory (CUDA) over a block, from a clean peak counter."""

    def __init__(self, cuda: bool):
        self.cuda, self.peak = cuda, float("nan")

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() / GIB


def pack_module(anchor, suffix: str):
    """The pack's module ``suffix`` (e.g. ``nodes.large_image``), found from one of its modules."""
    return importlib.import_module(f"{anchor.__package__.rsplit('.', 1)[0]}.{suffix}")


# --------------------------------------------------------------------------------------------- #
# Models
# --------------------------------------------------------------------------------------------- #


def sdxl_vae(cuda: bool, fixtures):
    """The full-size SDXL VAE with random weights (CUDA), or the tests' tiny TAESD (dry run)."""
    import comfy.sd

    if not cuda:
        return fixtures.tiny_models.tiny_vae(0)
    from comfy.ldm.models.autoencoder import AutoencoderKL

    torch.manual_seed(0)
    state = AutoencoderKL(ddconfig=dict(SDXL_VAE_DDCONFIG), embed_dim=4).state_dict()
    return comfy.sd.VAE(sd=state, config={"params": {"ddconfig": dict(SDXL_VAE_DDCONFIG), "embed_dim": 4}})


# --------------------------------------------------------------------------------------------- #
# Cells
# --------------------------------------------------------------------------------------------- #


def bench_figures(r: dict, steps: int) -> dict:
    """A cell's figures from a ``bench_pixelsmith`` / ``bench_freescale`` ``run_one`` result."""
    return {"wall_s": r["wall"], "calls": r["calls"], "model_fraction": r["inside"],
            "peak_device_gib": r["peak_dev"], "peak_rss_gib": r["peak_rss"], "s_per_step": r["wall"] / steps}


def pixelsmith_cells(sampler_mod, model, pos, neg, cuda: bool, scale: int, steps: int) -> list[Cell]:
    patch, band = (1024, 80) if cuda else (128, 16)  # image px
    cells = []
    for size in GPU_SIZES["pixelsmith"]:
        for mode in ("fast", "faithful"):
            side = size // scale

            def run(side=side, mode=mode):
                r = bench_pixelsmith.run_one(sampler_mod, model, pos, neg, side, mode, steps, max(1, steps // 2),
                                             cuda, patch_size=patch, band=band)
                return bench_figures(r, steps)

            cells.append(Cell(f"Pixelsmith {mode}", f"pixelsmith-{mode}", size, (size / 1024) ** 2 * steps, run,
                              side))
    return cells


def freescale_cells(cascade, model, pos, neg, cuda: bool, scale: int, steps: int) -> list[Cell]:
    plan = [(4096, "plain"), (4096, "normal"), (4096, "fast"), (8192, "fast"), (8192, "plain")]
    cells = []
    for size, mode in plan:
        def run(side=size // scale, mode=mode):
            r = bench_freescale.run_one(cascade, model, pos, neg, side, mode, steps, cuda)
            return bench_figures(r, max(1, r["calls"]))

        # Global attention grows with the square of the token count: weight the work by area².
        work = (size / 1024) ** 2 * (1 if mode == "fast" else (size / 4096) ** 2) * steps
        cells.append(Cell(f"FreeScale {mode}", f"freescale-{mode}", size, work, run, size // scale))
    return cells


def ultrapixel_cells(anchor, cuda: bool, fixtures, scale: int, steps: int) -> list[Cell]:
    def run(side: int):  # builds stage C for the cell, so it leaves the device with the cell
        import comfy.patcher_extension as pe

        passes = pack_module(anchor, "nodes.ultrapixel_passes")
        patch = pack_module(anchor, "nodes.ultrapixel_patch")
        builder = bench_ultrapixel.cuda_models if cuda else bench_ultrapixel.cpu_models
        stage_c, up_model, w_text, w_pooled, _ = builder(lambda suffix: pack_module(anchor, suffix), fixtures)
        state = {"up": up_model, "pos": bench_ultrapixel.conditioning(w_text, w_pooled, 1),
                 "neg": bench_ultrapixel.conditioning(w_text, w_pooled, 2)}
        meter = Meter(cuda)
        model = passes.with_shift(stage_c, 1.0).clone()
        # Stage C takes no diffusion-model wrapper in every ComfyUI version; apply-model wrappers it takes.
        model.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, "gpu_suite", meter.wrapper)
        with DevicePeak(cuda) as peak, meter, torch.inference_mode():
            start = time.perf_counter()
            guidance, _, hr_noise = passes.lr_pass(model, state["pos"], state["neg"], side, side, 1, 0, steps, 4.0,
                                                   0.7, 1.0)
            lr_wall = time.perf_counter() - start
            hr_model, hook = patch.inject_clone(model, state["up"], guidance, 0.7)
            try:
                hr_start = time.perf_counter()
                passes.sample_pass(hr_model, hr_noise, state["pos"], state["neg"], 4.0,
                                   passes.official_sigmas(model, steps), torch.zeros_like(hr_noise), 0, None)
                if cuda:
                    torch.cuda.synchronize()
                hr_wall = time.perf_counter() - hr_start
            finally:
                hook.release()
        wall = lr_wall + hr_wall
        return {"wall_s": wall, "calls": meter.calls, "model_fraction": meter.inside / wall,
                "peak_device_gib": peak.peak, "peak_rss_gib": meter.peak_rss / GIB, "s_per_step": hr_wall / steps}

    return [Cell("UltraPixel stage C", "ultrapixel", size, (size / 1024) ** 2 * steps,
                 lambda side=size // scale: run(side), size // scale) for size in GPU_SIZES["ultrapixel"]]


def decode_cells(anchor, cuda: bool, fixtures, scale: int) -> list[Cell]:
    def run(side: int):
        import folder_paths

        large = pack_module(anchor, "nodes.large_image")
        vae = sdxl_vae(cuda, fixtures)
        ratio = int(vae.spacial_compression_decode())
        latent = torch.randn(1, 4, side // ratio, side // ratio, generator=torch.Generator().manual_seed(5))
        out = Path(tempfile.mkdtemp(prefix="ultrares_gpu_suite_"))
        saved = folder_paths.get_output_directory()
        folder_paths.set_output_directory(str(out))
        meter = Meter(cuda)
        try:
            with DevicePeak(cuda) as peak, meter, torch.inference_mode():
                start = time.perf_counter()
                large.SaveLargeImage.execute({"samples": latent}, vae, "suite/large", "tiff", "none", 512, 64)
                wall = time.perf_counter() - start
        finally:
            folder_paths.set_output_directory(saved)
            for f in sorted(out.rglob("*"), reverse=True):
                f.unlink() if f.is_file() else f.rmdir()
            out.rmdir()
        return {"wall_s": wall, "peak_device_gib": peak.peak, "peak_rss_gib": meter.peak_rss / GIB}

    return [Cell("Save Large Image decode", "decode", size, (size / 1024) ** 2, lambda side=size // scale: run(side),
                 size // scale) for size in GPU_SIZES["decode"]]


def run_cells(cells: list[Cell], budget: Budget) -> None:
    import comfy.model_management

    for cell in cells:
        try:
            budget.check(cell.kind, cell.work)
            start = time.monotonic()
            cell.result = cell.run()
            cell.status = "ok"
            budget.learn(cell.kind, cell.work, time.monotonic() - start)
        except BudgetExhausted as e:
            cell.status, cell.note = "skipped", str(e)
        except comfy.model_management.InterruptProcessingException:
            cell.status, cell.note = "stopped", "stopped at the time budget"
            comfy.model_management.interrupt_current_processing(False)
        except Exception as e:  # noqa: BLE001  (recorded and reported; the suite exits 1)
            cell.status, cell.note = "error", f"{type(e).__name__}: {e}"
            cell.result["traceback"] = traceback.format_exc()
            print(cell.result["traceback"], file=sys.stderr, flush=True)
        print(f"[gpu_suite] {cell.name} {cell.size}²: {cell.status} {cell.note} "
              f"{json.dumps({k: v for k, v in cell.result.items() if k != 'traceback'}, default=str)}", flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------- #
# Targets and report
# --------------------------------------------------------------------------------------------- #


def find(cells: list[Cell], kind: str, size: int) -> dict | None:
    return next((c.result for c in cells if c.kind == kind and c.size == size and c.status == "ok"), None)


def targets(cells: list[Cell], judged: bool) -> list[dict]:
    """The issue's acceptance figures: value, target and whether it is met (None: not measured / dry run)."""
    def ratio(a, b, key):
        return a[key] / b[key] if a and b and b.get(key) else None

    fast_big = find(cells, "pixelsmith-fast", 8192) or find(cells, "pixelsmith-fast", 4096)
    rows = [
        ("Pixelsmith fast peak memory 8192² ÷ 2048²",
         ratio(find(cells, "pixelsmith-fast", 8192), find(cells, "pixelsmith-fast", 2048), "peak_device_gib"),
         "≤ 1.10", lambda v: v <= 1.10),
        ("Pixelsmith faithful peak memory 8192² ÷ 2048²",
         ratio(find(cells, "pixelsmith-faithful", 8192), find(cells, "pixelsmith-faithful", 2048),
               "peak_device_gib"), "≤ 1.10", lambda v: v <= 1.10),
        ("Pixelsmith fast: model time ÷ wall time (largest size run)",
         fast_big["model_fraction"] if fast_big else None, "≥ 0.95", lambda v: v >= 0.95),
        ("Pixelsmith 4096²: faithful wall ÷ fast wall",
         ratio(find(cells, "pixelsmith-faithful", 4096), find(cells, "pixelsmith-fast", 4096), "wall_s"),
         "≥ 1.8", lambda v: v >= 1.8),
        ("FreeScale 8192² fast: peak device memory (GiB)",
         (find(cells, "freescale-fast", 8192) or {}).get("peak_device_gib"), "≤ 40", lambda v: v <= 40),
        ("UltraPixel 4096²: peak device memory (GiB)",
         (find(cells, "ultrapixel", 4096) or {}).get("peak_device_gib"), "≤ 16", lambda v: v <= 16),
    ]
    out = []
    for name, value, target, test in rows:
        known = value is not None and math.isfinite(value)
        out.append({"name": name, "value": value if known else None, "target": target,
                    "met": bool(test(value)) if (judged and known) else None})
    return out


def finite(value):
    """``value`` with every NaN / ±inf float replaced by None (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def fmt(v, spec=".2f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return format(v, spec)


def markdown(report: dict) -> str:
    lines = [f"GPU suite on {report['device']}, {report['date']} (torch {report['torch']}, "
             f"budget {report['budget_s']:.0f} s, used {report['used_s']:.0f} s"
             + ("; dry run: tiny models on the CPU at the 'run at' sizes, memory = peak RSS"
                if report["dry_run"] else "") + ")",
             "",
             "| cell | size | run at | status | wall s | s/step | calls | in model | peak device GiB | peak RAM GiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in report["cells"]:
        r = c["result"]
        status = c["status"] + (f": {c['note']}" if c["note"] else "")
        lines.append(f"| {c['name']} | {c['size']}² | {c['run_px']}² | {status} | "
                     f"{fmt(r.get('wall_s'))} | {fmt(r.get('s_per_step'), '.3f')} | {fmt(r.get('calls'), 'd')} | "
                     f"{fmt(r.get('model_fraction'), '.0%')} | {fmt(r.get('peak_device_gib'))} | "
                     f"{fmt(r.get('peak_rss_gib'))} |")
    lines += ["", "| target | value | wanted | met |", "|---|---|---|---|"]
    for t in report["targets"]:
        met = {True: "yes", False: "**no**", None: "–"}[t["met"]]
        lines.append(f"| {t['name']} | {fmt(t['value'])} | {t['target']} | {met} |")
    return "\n".join(lines) + "\n"


def sdxl_part(sampler_mod, cascade, cuda: bool, fixtures, scale: int, steps: int, budget: Budget) -> list[Cell]:
    """The cells on the SDXL UNet (warm-up, Pixelsmith, FreeScale); the model is dropped on return."""
    model, pos, neg = sdxl_model(cuda, fixtures)

    def warm_up():  # model load, allocator, kernel selection: not a figure, only its time is shown
        start = time.perf_counter()
        bench_pixelsmith.run_one(sampler_mod, model, pos, neg, 1024 // scale, "fast", 1, 1, cuda,
                                 patch_size=1024 // scale, band=16)
        return {"wall_s": time.perf_counter() - start}

    cells = ([Cell("warm-up (SDXL UNet load)", "warm-up", 1024, 1.0, warm_up, 1024 // scale)]
             + pixelsmith_cells(sampler_mod, model, pos, neg, cuda, scale, steps)
             + freescale_cells(cascade, model, pos, neg, cuda, scale, max(steps, 3)))
    run_cells(cells, budget)
    for cell in cells:
        cell.run = None  # the closures hold the model
    return cells


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui", default=os.environ.get("ULTRARES_COMFYUI"), help="ComfyUI folder")
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu_suite_out"), help="folder for the JSON and table")
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole suite (default: 480; dry 300)")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps per cell (default: 4; dry run 2)")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny models, sizes ÷ 8 (default without CUDA)")
    args = ap.parse_args(argv)
    if not args.comfyui:
        ap.error("pass --comfyui DIR or set ULTRARES_COMFYUI")
    cuda = torch.cuda.is_available() and not args.dry_run
    scale = 1 if cuda else DRY_RUN_DIVISOR
    steps = args.steps or (4 if cuda else 2)
    started = time.monotonic()
    budget_s = args.budget or (480.0 if cuda else 300.0)

    sampler_mod, fixtures = boot(Path(args.comfyui), cuda, "pixelsmith_sampler")
    cascade = pack_module(sampler_mod, "nodes.freescale_cascade")
    budget = Budget(budget_s - (time.monotonic() - started))
    device = torch.cuda.get_device_name() if cuda else f"CPU ({os.cpu_count()} threads)"
    print(f"[gpu_suite] {device}; steps {steps}; budget {budget_s:.0f} s", flush=True)

    try:
        cells = sdxl_part(sampler_mod, cascade, cuda, fixtures, scale, steps, budget)
        import comfy.model_management

        comfy.model_management.unload_all_models()  # the SDXL UNet leaves the device before stage C
        gc.collect()
        for late in (ultrapixel_cells(sampler_mod, cuda, fixtures, scale, steps),
                     decode_cells(sampler_mod, cuda, fixtures, 1 if cuda else DRY_RUN_DECODE_DIVISOR)):
            run_cells(late, budget)
            cells += late
            comfy.model_management.unload_all_models()
            gc.collect()
    finally:
        budget.stop()

    report = {
        "device": device, "date": datetime.date.today().isoformat(), "torch": torch.__version__,
        "dry_run": not cuda, "steps": steps, "budget_s": budget_s,
        "used_s": time.monotonic() - started,
        "cells": [{"name": c.name, "kind": c.kind, "size": c.size, "run_px": c.run_px, "status": c.status,
                   "note": c.note, "result": c.result} for c in cells],
        "targets": targets(cells, judged=cuda),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_suite.json").write_text(json.dumps(finite(report), indent=2, default=str))
    table = markdown(report)
    (out / "gpu_suite.md").write_text(table)
    print(table, flush=True)
    errors = [c for c in cells if c.status == "error"]
    for c in errors:
        print(f"[gpu_suite] ERROR in {c.name} {c.size}²: {c.note}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
