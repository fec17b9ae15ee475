"""Quality benchmark on the embedded demo model: does each method stop repetition and add detail?

    python tests/benchmarks/bench_quality.py --comfyui $HOST/ComfyUI [--scales 2 4 8] [--samples 32]
        [--model-file tests/benchmarks/models/bench_crops.safetensors]

``--model-file`` runs the same on a benchmark model of ``demo/train_bench.py`` (another native
size, data and conditioning: results that hold on all are not tuned to the demo model); the
right object count, the object threshold, the patch grid and the training references follow the
model (``demo.bench_models.MODELS``, by the file's ``model`` metadata).

For each scale (× the 128 px native side) it runs real ComfyUI graphs on the demo model, all from
the same batch of base images (``--samples`` images, one batch from ``--seed``):

* ``direct``: KSampler straight at the target size (what the methods exist to fix);
* ``lanczos``: the base image Lanczos-upscaled (no new detail by construction);
* ``pixelsmith-faithful`` / ``pixelsmith-fast``: a cascade of Pixelsmith Upscale ×2 stages
  (slider 80 % of the steps on the first stage, 90 % on later ones: the tiny model needs more
  guidance than SDXL, whose paper values are 40 % and 60 %; patch = the native side, 128 px);
* ``freescale-normal`` / ``freescale-fast``: FreeScale Upscale through every ×2 size.

Metrics (``demo/metrics.py``): objects found (mean; the right count is that of a native picture: 1,
or 2 on the pair model) and % with the right count; SSIM of the downscaled result to the base and
the IoU of its object mask with the base's; the Fréchet distance of 1:1 32² crop texture features to
the training images' (lower = detail more like the training data); the power of the top spectral
band (periods under 4 px) ÷ the training images' (native-scale detail kept); the seam score on the
Pixelsmith patch grid, one native side (jump across the grid lines ÷ the jump across the latent-cell
borders beside them; 1 = no seam) and the worst line anywhere; % whose object keeps the base's
hue (within 30°); wall time; peak RSS rise. It prints a
Markdown table and writes ``quality.png`` (the bars) and ``grid_<scale>x.jpg`` (first sample of each
method, same seed) to ``--out``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from bench_common import Meter  # script folder on sys.path; puts tests/ (the harness) there too
from harness.comfy_host import FIXTURE_PACK, PACK_ROOT, ComfyHost, image_tensor
from harness.graphs import DEMO_METHODS as METHODS
from harness.graphs import DEMO_NATIVE as NATIVE
from harness.graphs import DIT_METHODS, demo_base_graph, demo_method_graph
from harness.pack import register_pack


def bar_chart(rows: list[dict], scales: list[int], methods: list[str], path: Path) -> None:
    """Two panels: % images with the right number of objects, and texture distance, per method and scale."""
    colours = [(90, 90, 90), (170, 170, 170), (214, 96, 77), (244, 165, 130), (67, 147, 195), (146, 197, 222),
               (153, 52, 4), (236, 112, 20), (8, 69, 148), (66, 146, 198), (84, 39, 143), (158, 154, 200)]
    panels = [("% with the right number of objects (higher is better)", "right_pct", 100.0),
              ("texture distance to training data (lower is better)", "texture",
               max(r["texture"] for r in rows) * 1.1)]
    w, h, pad = 900, 300, 40
    per_row = 5
    legend_rows = -(-len(methods) // per_row)
    img = Image.new("RGB", (w, h * len(panels) + 8 + 18 * legend_rows), "white")
    draw = ImageDraw.Draw(img)
    group = (w - 2 * pad) / len(scales)
    bar = group / (len(methods) + 1)
    for p, (title, key, top) in enumerate(panels):
        y0 = p * h
        draw.text((pad, y0 + 5), title, fill="black")
        base_y = y0 + h - 30
        draw.line([(pad, base_y), (w - pad, base_y)], fill="black")
        for s, scale in enumerate(scales):
            draw.text((pad + s * group + group / 2 - 10, base_y + 5), f"{scale}x", fill="black")
            for m, method in enumerate(methods):
                row = next((r for r in rows if r["scale"] == scale and r["method"] == method), None)
                if row is None:
                    continue
                x = pad + s * group + (m + 0.5) * bar
                top_y = base_y - (h - 70) * min(row[key] / top, 1.0)
                draw.rectangle([x, top_y, x + bar * 0.9, base_y], fill=colours[m % len(colours)])
    for m, method in enumerate(methods):
        x, y = pad + (m % per_row) * (w - 2 * pad) / per_row, h * len(panels) + 8 + 18 * (m // per_row)
        draw.rectangle([x, y, x + 12, y + 12], fill=colours[m % len(colours)])
        draw.text((x + 16, y), method, fill="black")
    img.save(path)


def picture_grid(images: dict[str, torch.Tensor], path: Path, cell: int = 256) -> None:
    names = list(images)
    img = Image.new("RGB", (cell * len(names), cell + 16), "white")
    draw = ImageDraw.Draw(img)
    for i, name in enumerate(names):
        arr = (images[name].permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)
        img.paste(Image.fromarray(arr).resize((cell, cell), Image.LANCZOS), (i * cell, 16))
        draw.text((i * cell + 4, 2), name, fill="black")
    img.save(path, quality=92)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--comfyui", type=Path, required=True)
    p.add_argument("--scales", type=int, nargs="+", default=[2, 4, 8], choices=[2, 4, 8, 16])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS + DIT_METHODS,
                   help=f"default: all but the DiT-only {', '.join(DIT_METHODS)}")
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--object", help="the prompt (default: the model's first class, 'red disc' on the demo model)")
    p.add_argument("--slider", type=float, nargs=2, default=[0.8, 0.9], metavar=("FIRST", "LATER"),
                   help="Pixelsmith slider as a fraction of the steps: first ×2 stage, later stages")
    p.add_argument("--cosine-scale", type=float, default=2.0, help="FreeScale's cosine_scale (paper: 2)")
    p.add_argument("--model-file", help="a benchmark model of demo/train_bench.py instead of the demo model")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--out", type=Path, default=Path("out/bench_quality"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    register_pack()
    from ultrares.demo import metrics
    from ultrares.demo.data import random_classes, render

    native = NATIVE  # also the Pixelsmith patch in image px: the grid the seam score looks at
    objects, min_px = 1, metrics.MIN_OBJECT_PX
    g = torch.Generator().manual_seed(12345)
    if args.model_file:
        from safetensors import safe_open

        from ultrares.demo.bench_models import MODELS
        with safe_open(args.model_file, "pt") as f:
            meta = f.metadata()
        bench = MODELS[meta["model"]]
        native, objects, min_px = int(meta["native_px"]), bench.objects, bench.min_object_px
        training = bench.reference(256, g)
        args.object = args.object or bench.classes[0]
    else:
        training = render(random_classes(256, g), g)
    args.object = args.object or "red disc"
    host = ComfyHost.boot(args.comfyui, Path(tempfile.mkdtemp(prefix="ultrares_quality_")),
                          packs={"ultrares": PACK_ROOT, "ultrares_testing": FIXTURE_PACK})
    args.out.mkdir(parents=True, exist_ok=True)
    reference = metrics.texture_features(training)
    training_fine = metrics.fine_energy(training)
    graph = demo_base_graph(args.samples, args.seed, args.steps, args.cfg, args.object, args.model_file, native)
    start = time.perf_counter()
    base_result = host.run(graph)
    base_s = time.perf_counter() - start
    base = image_tensor(host.saved_images(base_result, "base_save"))
    counts = metrics.count_objects(base, min_px)
    print(f"base {native}²: {args.samples} samples in {base_s:.1f} s; objects mean {np.mean(counts):.2f} "
          f"(right: {objects}), right count {100 * np.mean(np.array(counts) == objects):.0f} %", flush=True)

    rows = []
    print("\n| scale | method | objects (mean) | right count % | SSIM to base | mask IoU | texture distance "
          "| fine detail ÷ training | seam (patch grid) | worst line | colour kept % | wall s | peak RSS rise GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for scale in args.scales:
        grid = {"base": base[0]}
        for method in args.methods:
            nodes = demo_method_graph(method, scale, args.samples, args.seed, args.steps, args.cfg, args.slider,
                                      args.model_file, native, args.cosine_scale)
            with Meter(cuda=False) as meter:
                start = time.perf_counter()
                result = host.run({**graph, **nodes})
                wall = time.perf_counter() - start
            images = image_tensor(host.saved_images(result, f"{method}.save"))
            found = np.array(metrics.count_objects(images, min_px))
            row = {"scale": scale, "method": method, "objects": float(found.mean()),
                   "right_pct": float(100 * (found == objects).mean()),
                   "ssim": float(metrics.structure_ssim(images, base).mean()),
                   "iou": float(metrics.mask_iou(images, base).mean()),
                   "texture": metrics.texture_distance(images, reference),
                   "fine": metrics.fine_energy(images) / training_fine,
                   "seam": float(metrics.seam_score(images, native).mean()),
                   "worst_line": float(metrics.worst_line(images).mean()),
                   "colour_pct": float(100 * metrics.hue_kept(images, base).float().mean()),
                   "wall": wall, "rss": (meter.peak_rss - meter.base_rss) / 2**30}
            rows.append(row)
            grid[method] = images[0]
            print(f"| {scale}× ({native * scale}²) | {method} | {row['objects']:.2f} | {row['right_pct']:.0f} | "
                  f"{row['ssim']:.3f} | {row['iou']:.3f} | {row['texture']:.1f} | {row['fine']:.2f} | "
                  f"{row['seam']:.3f} | {row['worst_line']:.2f} | {row['colour_pct']:.0f} | {wall:.1f} | "
                  f"{row['rss']:.2f} |", flush=True)
        picture_grid(grid, args.out / f"grid_{scale}x.jpg")
    bar_chart(rows, args.scales, args.methods, args.out / "quality.png")
    print(f"\nwrote {args.out / 'quality.png'} and the picture grids")
    return 0


if __name__ == "__main__":
    sys.exit(main())
