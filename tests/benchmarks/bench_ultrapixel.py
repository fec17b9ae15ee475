"""UltraPixel stage-C benchmark: wall time and peak memory of the LR and HR passes per target size.

    python tests/benchmarks/bench_ultrapixel.py [--comfyui DIR] [--sizes 2048,4096,5120] [--steps 20] [--repeats 2]

Boots a real ComfyUI (``tests/harness/comfy_host.py``) and runs the pack's own code paths
(``lr_pass``, ``inject_clone``, ``sample_pass``: ComfyUI's DDPM sampler, CFG 4 with rescale 0.7,
shift 1) for each size, with the INR upscale g -> g' computed once per size (the pack's
behaviour) and, for comparison, recomputed at every model call.

* CPU (always available): the tiny seeded stage C of the test fixtures (c_hidden [32, 64]) and
  tiny UltraPixel modules matching it. Times show the pack's overhead and scaling, not what the
  3.6B model costs. Peak memory = peak process RSS above the level before the pass (sampled
  every 2 ms).
* CUDA (when ``torch.cuda.is_available()``, or ``--device cuda``): a randomly initialised
  full-size stage C (ComfyUI's StageC defaults, 3.6B, bf16) and full-size UltraPixel modules
  (105 M, bf16), text conditioning drawn at CLIP bigG widths. Peak memory =
  ``torch.cuda.max_memory_allocated`` during the pass. ComfyUI is booted with ``--cpu`` by the
  harness, so the models are handed to ComfyUI's patcher with an explicit CUDA load device.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench_common import RssPeak  # script folder on sys.path; puts tests/ (the harness) there too
from harness.comfy_host import FIXTURE_PACK, PACK_ROOT, ComfyHost


class CudaPeak:
    def __enter__(self):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.base = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc):
        torch.cuda.synchronize()
        self.peak = torch.cuda.max_memory_allocated()

    @property
    def delta_mib(self) -> float:
        return (self.peak - self.base) / 2**20


def pack(host, suffix):
    cls = host.node_classes["UltraRes_UltraPixelLoader"]
    package = sys.modules[cls.__module__].__package__.rsplit(".", 1)[0]
    return sys.modules[f"{package}.{suffix}"]


def fixtures_of(host):
    """The test-fixture package (tiny models) of a booted host."""
    return sys.modules[host.node_classes["UltraResTest_TinyCascade"].__module__]


def conditioning(width_text: int, width_pooled: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(1, 77, width_text, generator=g)
    pooled = torch.randn(1, 1, width_pooled, generator=g)
    return [[text, {"pooled_output": pooled}]]


def cpu_models(pack_module, fixtures):
    """Tiny stage C and UltraPixel modules; ``pack_module(suffix)`` returns the pack's module."""
    import importlib

    tiny_up = importlib.import_module(f"{fixtures.__name__}.tiny_ultrapixel")
    stage_c = fixtures.tiny_models.tiny_cascade("c", 0)
    loader = pack_module("nodes.ultrapixel_loader")
    up_model = loader.load_ultrapixel(tiny_up.tiny_ultrapixel_state(0), "tiny")
    width = fixtures.tiny_models.TINY_CLIP_WIDTH
    return stage_c, up_model, width, width, RssPeak


def cuda_models(pack_module, fixtures=None):
    """Random full-size stage C (3.6B, bf16) and UltraPixel modules (105 M, bf16) on CUDA."""
    import comfy.model_patcher
    import comfy.supported_models

    kup = pack_module("kernels.ultrapixel")
    kconfig = pack_module("kernels.ultrapixel_config")
    loader = pack_module("nodes.ultrapixel_loader")
    device = torch.device("cuda")
    config = comfy.supported_models.Stable_Cascade_C({"stable_cascade_stage": "c"})  # StageC defaults: 3.6B
    config.set_inference_dtype(torch.bfloat16, None)
    model = config.get_model({}, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in sorted(model.diffusion_model.named_parameters()):
            if p.ndim >= 2:
                p.normal_(0.0, 1.0 / math.sqrt(p[0].numel()), generator=gen)
            else:
                p.fill_(1.0) if name.endswith("weight") else p.zero_()
    patcher = comfy.model_patcher.ModelPatcher(model.eval(), load_device=device, offload_device=torch.device("cpu"))
    modules = kup.build_ultrapixel_modules(kconfig.UltraPixelConfig())
    state = {"module." + kconfig.CHECKPOINT_PREFIXES[p] + k: v.to(torch.bfloat16)
             for p in kconfig.INJECTION_POINTS for k, v in modules[p].state_dict().items()}
    up_model = loader.load_ultrapixel(state, "random-full", dtype=torch.bfloat16)
    return patcher, up_model, 1280, 1280, CudaPeak


class EveryStepHook:
    """Wraps the pack's InjectHook so that g' is recomputed at every call (the naive variant)."""

    def __init__(self, hook):
        self.hook = hook

    def __call__(self, point, out, transformer_options):
        self.hook.g_up.clear()
        return self.hook(point, out, transformer_options)


def timed(fn, peak_cls):
    with peak_cls() as peak:
        t0 = time.perf_counter()
        result = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
    return result, elapsed, peak.delta_mib


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", default=os.environ.get("ULTRARES_COMFYUI"))
    parser.add_argument("--sizes", default="2048,4096,5120", help="square target sizes in px")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--repeats", type=int, default=2, help="HR runs per variant; the fastest is reported")
    args = parser.parse_args(argv)
    if not args.comfyui:
        parser.error("no ComfyUI folder: pass --comfyui or set ULTRARES_COMFYUI")
    host = ComfyHost.boot(args.comfyui, Path(tempfile.mkdtemp(prefix="ultrares-bench-")),
                          packs={"ultrares": PACK_ROOT, "ultrares_testing": FIXTURE_PACK})
    passes = pack(host, "nodes.ultrapixel_passes")
    patch = pack(host, "nodes.ultrapixel_patch")
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    stage_c, up_model, w_text, w_pooled, peak_cls = (cuda_models if use_cuda else cpu_models)(
        lambda suffix: pack(host, suffix), fixtures_of(host))
    positive = conditioning(w_text, w_pooled, 1)
    negative = conditioning(w_text, w_pooled, 2)
    steps, cfg, rho, shift = args.steps, 4.0, 0.7, 1.0
    label = ("cuda, random full stage C 3.6B bf16" if use_cuda
             else f"cpu ({torch.get_num_threads()} threads), tiny stage C")
    print(f"UltraPixel stage C benchmark: {label}; {steps} steps per pass, cfg {cfg}, rescale {rho}, DDPM")
    print(f"{'target':>10} {'HR latent':>10} {'LR pass s':>10} {'LR MiB':>8} {'INR 4 pts s':>12} "
          f"{'HR s (INR once)':>16} {'MiB':>8} {'HR s (INR/step)':>16} {'MiB':>8}")
    sampled = passes.with_shift(stage_c, shift)
    # Warm-up (first-call allocations, lazy imports), not reported.
    passes.lr_pass(sampled, positive, negative, 1024, 1024, 1, 0, 1, cfg, rho, shift)
    for size in [int(s) for s in args.sizes.split(",") if s.strip()]:
        hr_c = pack(host, "kernels.ultrapixel").stage_c_latent_size(size, size)
        (guidance, _, hr_noise), t_lr, m_lr = timed(
            lambda: passes.lr_pass(sampled, positive, negative, size, size, 1, 0, steps, cfg, rho, shift), peak_cls)
        sigmas = passes.official_sigmas(sampled, steps)
        probe, probe_hook = patch.inject_clone(sampled, up_model, guidance, rho)

        def inr_all_points():
            with torch.no_grad():
                for point in patch.PATCH_KEYS:
                    module = probe_hook.module(point, hr_noise.device if not use_cuda else torch.device("cuda"),
                                               up_model.dtype or torch.float32)
                    module.upscale_guidance(guidance.features[point].to(module.wtokens), hr_c)

        probe_hook.module("E0", torch.device("cuda") if use_cuda else torch.device("cpu"),
                          up_model.dtype or torch.float32)
        _, t_inr, _ = timed(inr_all_points, peak_cls)
        probe_hook.release()
        del probe
        row = []
        for every_step in (False, True):
            best = (math.inf, 0.0)
            for _ in range(max(1, args.repeats)):
                model, hook = patch.inject_clone(sampled, up_model, guidance, rho)
                if every_step:
                    wrapped = EveryStepHook(hook)
                    for key in patch.PATCH_KEYS.values():
                        object.__setattr__(model.object_patches[key], "hook", wrapped)
                _, t_hr, m_hr = timed(lambda: passes.sample_pass(model, hr_noise, positive, negative, cfg, sigmas,
                                                             torch.zeros_like(hr_noise), 0, None), peak_cls)
                hook.release()
                model = hook = None  # free the patched clone before the next repeat
                best = min(best, (t_hr, m_hr))
            row += list(best)
        print(f"{size:>9}² {hr_c[0]:>8}² {t_lr:>10.2f} {m_lr:>8.0f} {t_inr:>12.3f} {row[0]:>16.2f} {row[1]:>8.0f} "
              f"{row[2]:>16.2f} {row[3]:>8.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
