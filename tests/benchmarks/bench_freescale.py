"""Benchmark of one FreeScale upscaling stage (self-cascade sampler + Scale Fusion + restrained
dilation + FreeU) inside ComfyUI's CFGGuider, per target size and mode.

Modes: ``plain`` (the self-cascade sampler on the unpatched model: the baseline cost of the
steps), ``normal`` (FreeScale as in the paper: Scale Fusion with full global attention) and
``fast`` (Scale Fusion fast mode: dilated global attention). The RGB-space upsampling (VAE) is not
timed: it depends only on the VAE.

* CPU (default when no CUDA): the tiny seeded SDXL-class UNet of the test fixtures, booted through
  ``tests/harness/comfy_host.py`` like the tests. Times show the pack's overhead and its scaling
  with size, not what SDXL costs. Peak memory = peak process RSS (sampled every 5 ms), also
  shown as the rise above the level before the run.
* CUDA (when available, or ``--device cuda``): a randomly initialised full-size SDXL UNet built
  from ComfyUI's own SDXL model class and SDXL base's UNet config (no weight file), fp16. Peak
  memory = ``torch.cuda.max_memory_allocated`` during the run.

Columns: wall time of the stage, diffusion-model calls, fraction of the wall time spent inside the
diffusion model (incl. the patches), peak device memory (CUDA), peak RAM.

    $H/venv/bin/python tests/benchmarks/bench_freescale.py --comfyui $H/ComfyUI --sizes 2048 4096 --steps 10
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from bench_common import Meter, boot, sdxl_model  # noqa: E402  (script folder on sys.path)


def run_one(cascade, patcher, pos, neg, size: int, mode: str, steps: int, cuda: bool) -> dict:
    import comfy.patcher_extension as pe
    import comfy.sample
    import comfy.samplers

    meter = Meter(cuda)
    model = patcher.clone()
    # Added first, so it is the outermost diffusion-model wrapper and includes the dilation wrapper.
    model.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, "bench_freescale", meter.wrapper)
    if mode != "plain":
        model = cascade.apply_scale_fusion(model, fast_mode=(mode == "fast"), jitter_seed=0)
        model = cascade.apply_restrained_dilation(model)
        model = cascade.apply_freeu(model)
    latent = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(2))
    noise = comfy.sample.prepare_noise(latent, 3)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "ddim_uniform", steps).cpu()
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(pos, neg)
    guider.set_cfg(7.5)
    sampler = cascade.self_cascade_sampler(cascade.SelfCascadeConfig(2.0, 1.0, 0.3, None))
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with meter, torch.inference_mode():  # as ComfyUI's executor runs nodes
        start = time.perf_counter()
        guider.sample(noise, latent, sampler, sigmas, disable_pbar=True, seed=3)
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    return {"size": size, "mode": mode, "wall": wall, "calls": meter.calls, "inside": meter.inside / wall,
            "peak_dev": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"),
            "peak_rss": meter.peak_rss / 2**30, "rss_rise": (meter.peak_rss - meter.base_rss) / 2**30}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui", default=os.environ.get("ULTRARES_COMFYUI"),
                    help="ComfyUI folder (default: $ULTRARES_COMFYUI)")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--sizes", type=int, nargs="+",
                    help="square target sides in px (default: CPU 2048 4096, CUDA 2048 4096 8192)")
    ap.add_argument("--modes", nargs="+", default=["plain", "normal", "fast"], choices=["plain", "normal", "fast"])
    ap.add_argument("--steps", type=int, default=None,
                    help="ddim_uniform steps of the schedule; 70%% of them run after the restart "
                         "(default: CPU 10, CUDA 50)")
    args = ap.parse_args()
    if not args.comfyui:
        ap.error("pass --comfyui DIR or set ULTRARES_COMFYUI")
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    sizes = args.sizes or ([2048, 4096, 8192] if cuda else [2048, 4096])
    steps = args.steps or (50 if cuda else 10)
    cascade, fixtures = boot(Path(args.comfyui), cuda, "freescale_cascade")
    patcher, pos, neg = sdxl_model(cuda, fixtures)
    device = (torch.cuda.get_device_name() if cuda
              else f"CPU ({os.cpu_count()} threads, torch {torch.get_num_threads()}), tiny SDXL-class UNet")
    print(f"FreeScale upscaling stage on {device}; {steps} ddim_uniform steps, restart int(0.3·steps), cfg 7.5, "
          "cosine_scale 2, dilation d = size // 1024 for 70% of the steps, FreeU")
    print(f"{'size':>7} {'mode':>7} {'wall s':>9} {'s/call':>8} {'calls':>6} {'in model':>9} "
          f"{'peak dev GiB':>13} {'peak RAM GiB':>13} {'RAM rise GiB':>13}")
    with torch.inference_mode():
        run_one(cascade, patcher, pos, neg, 512, "normal", 2, cuda)  # warm-up: model load, allocator, kernels
    results = []
    for size in sizes:
        for mode in args.modes:
            r = run_one(cascade, patcher, pos, neg, size, mode, steps, cuda)
            results.append(r)
            print(f"{r['size']:>6}² {r['mode']:>7} {r['wall']:>9.2f} {r['wall'] / max(1, r['calls']):>8.2f} "
                  f"{r['calls']:>6} {r['inside']:>8.0%} {r['peak_dev']:>13.2f} {r['peak_rss']:>13.2f} "
                  f"{r['rss_rise']:>13.2f}", flush=True)
    for size in sizes:
        by = {r["mode"]: r for r in results if r["size"] == size}
        if "plain" in by:
            for mode in ("normal", "fast"):
                if mode in by:
                    print(f"{size}²: {mode} costs {by[mode]['wall'] / by['plain']['wall']:.2f}× the unpatched stage")


if __name__ == "__main__":
    main()
