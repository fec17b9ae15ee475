"""Benchmark of the Pixelsmith sampler (faithful vs fast) inside ComfyUI's CFGGuider.

CPU (default when no CUDA): the tiny seeded SDXL-class UNet of the test fixtures, booted through
``tests/harness/comfy_host.py`` like the tests. CUDA: a randomly initialised full-size SDXL UNet
built from ComfyUI's own SDXL model class and SDXL's UNet config (no weights needed), fp16.

Per resolution and mode it prints: wall time, model calls, fraction of the wall time spent
inside the diffusion model, peak device memory (CUDA) and peak process RAM (RSS, sampled).

    $H/venv/bin/python tests/benchmarks/bench_pixelsmith.py --comfyui $H/ComfyUI \
        --sizes 2048 4096 --steps 4
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from bench_common import Meter, boot, sdxl_model  # noqa: E402  (script folder on sys.path)


def run_one(sampler_mod, mp, pos, neg, size: int, mode: str, steps: int, slider: int, cuda: bool,
            patch_batch: int = 0, patch_size: int = 1024, band: int = 80):  # image px
    import comfy.patcher_extension as pe
    import comfy.sample
    import comfy.samplers

    meter = Meter(cuda)
    model = mp.clone()
    model.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, "bench", meter.wrapper)
    latent = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(2))
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "ddim_uniform", steps).cpu()
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(pos, neg)
    guider.set_cfg(7.5)
    config = sampler_mod.PixelsmithConfig(slider, patch_size, band, mode, patch_batch, "fixed", "auto")
    noise = comfy.sample.prepare_noise(latent, 3)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with meter, torch.inference_mode():  # as ComfyUI's executor runs nodes
        t = time.perf_counter()
        guider.sample(noise, latent, sampler_mod.PixelsmithSampler(config), sigmas, disable_pbar=True, seed=3)
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - t
    peak_dev = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return {"size": size, "mode": mode, "wall": wall, "calls": meter.calls, "inside": meter.inside / wall,
            "patches": meter.rows // 2,  # CFG: cond + uncond rows per patch (batch 1)
            "peak_dev": peak_dev, "peak_rss": meter.peak_rss / 2**30}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui", default=os.environ.get("ULTRARES_COMFYUI"), help="ComfyUI folder")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--sizes", type=int, nargs="+", help="image sides in px (default: CPU 2048 4096, CUDA 8192 16384)")
    ap.add_argument("--modes", nargs="+", default=["faithful", "fast"])
    ap.add_argument("--steps", type=int, default=None, help="ddim_uniform steps (default: CPU 4, CUDA 50)")
    ap.add_argument("--patch-batch", type=int, default=0, help="fast mode patches per call (0 = auto)")
    ap.add_argument("--slider", type=int, default=None, help="guided steps (default: 60%% of steps)")
    args = ap.parse_args()
    if not args.comfyui:
        ap.error("pass --comfyui DIR or set ULTRARES_COMFYUI")
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    sizes = args.sizes or ([8192, 16384] if cuda else [2048, 4096])
    steps = args.steps or (50 if cuda else 4)
    slider = args.slider if args.slider is not None else max(1, round(0.6 * steps))
    sampler_mod, fixtures = boot(Path(args.comfyui), cuda, "pixelsmith_sampler")
    mp, pos, neg = sdxl_model(cuda, fixtures)
    dev = torch.cuda.get_device_name() if cuda else f"CPU ({os.cpu_count()} threads), tiny SDXL-class UNet"
    print(f"Pixelsmith sampler benchmark on {dev}; {steps} ddim_uniform steps, slider {slider}, cfg 7.5, patch 128")
    print(f"{'size':>7} {'mode':>9} {'wall s':>9} {'calls':>7} {'patches':>8} {'in model':>9} "
          f"{'peak dev GiB':>13} {'peak RAM GiB':>13}")
    results = []
    for size in sizes:
        for mode in args.modes:
            r = run_one(sampler_mod, mp, pos, neg, size, mode, steps, slider, cuda, args.patch_batch)
            results.append(r)
            print(f"{r['size']:>6}² {r['mode']:>9} {r['wall']:>9.2f} {r['calls']:>7} {r['patches']:>8} "
                  f"{r['inside']:>8.0%} "
                  f"{r['peak_dev']:>13.2f} {r['peak_rss']:>13.2f}", flush=True)
    for size in sizes:
        by = {r["mode"]: r for r in results if r["size"] == size}
        if "faithful" in by and "fast" in by:
            print(f"{size}²: fast is {by['faithful']['wall'] / by['fast']['wall']:.2f}× faster than faithful")


if __name__ == "__main__":
    main()
