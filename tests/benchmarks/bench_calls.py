"""Model calls a recipe costs to reach a target size: Pixelsmith's patch windows and FreeScale's steps.

    python tests/benchmarks/bench_calls.py [--native 1024] [--target 4096] [--steps 28] [--patch-batch 8]

Pixelsmith's cost is its number of patch windows (each one native-size denoiser pass, per CFG branch),
counted here by running the real patch sampler (``kernels/pixelsmith.py``) with a stand-in denoiser on
latents of the recipe's sizes (8 image px per latent cell: SDXL, SD3, Flux.1, Qwen-Image, Z-Image;
Flux.2's 16 px cells give the same counts at the same patch size in cells). ``fast`` batches
``--patch-batch`` windows per call; with ``positions=global`` (DiTs) each window is its own call.
FreeScale runs one full-size call per step after its 30 % restart, per ×2 stage. Multiply by 2 for
CFG above 1 (one call holds both branches, at twice the work). Counts depend only on sizes, steps
and the seed, not on the model.
"""
from __future__ import annotations

import argparse
import sys

import torch

import bench_common  # noqa: F401  (script folder on sys.path; puts tests/ (the harness) there too)
from harness.pack import register_pack

register_pack()
from ultrares.kernels import freescale, pixelsmith  # noqa: E402


def pixelsmith_windows(side: int, patch: int, steps: int, mode: str, seed: int = 0) -> int:
    """Patch windows the sampler denoises for one stage on a ``side``² latent."""
    z = torch.zeros(1, 1, side, side)
    count = 0

    def denoise(y, sigma, boxes, **_):
        nonlocal count
        count += len(boxes)
        return torch.zeros_like(y)

    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    pixelsmith.sample_pixelsmith(denoise, z, sigmas, z_up=z, noise=z, slider=0, generator=torch.Generator().manual_seed(
        seed), patch_size=patch, band=min(10, patch // 4), mode=mode, patch_batch=1)
    return count


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--native", type=int, default=1024, help="the model's native side in image px")
    p.add_argument("--target", type=int, default=4096)
    p.add_argument("--steps", type=int, default=28)
    p.add_argument("--patch-batch", type=int, default=8)
    args = p.parse_args(argv)
    sides = []
    side = args.native * 2
    while side <= args.target:
        sides.append(side)
        side *= 2
    patch = args.native // 8
    print(f"{args.native}² → {args.target}² in ×2 stages {sides}, {args.steps} steps, patch {args.native} px\n")
    print("| recipe | model calls per stage | total |")
    print("|---|---|---|")
    for mode in ("faithful", "fast"):
        windows = [pixelsmith_windows(s // 8, patch, args.steps, mode) for s in sides]
        calls = windows if mode == "faithful" else [-(-w // args.patch_batch) for w in windows]
        print(f"| Pixelsmith {mode} | {' + '.join(map(str, calls))} | {sum(calls)} |")
        if mode == "fast":
            print(f"| Pixelsmith fast, positions global | {' + '.join(map(str, windows))} | {sum(windows)} |")
    per_stage = args.steps - freescale.restart_step(args.steps)
    print(f"| FreeScale (full-size calls) | {' + '.join([str(per_stage)] * len(sides))} | {per_stage * len(sides)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
