"""UltraPixel quality benchmark on the embedded Stable Cascade demo: one object where direct sampling repeats?

    python tests/benchmarks/bench_quality_ultrapixel.py --comfyui $HOST/ComfyUI [--scales 2 4] [--samples 32]

Real ComfyUI graphs on UltraRes Demo Cascade (stage C native size 512 nominal px = a 12² latent,
decoded at 8 px per cell, so 96 px pictures at 1×). Per scale (× 512 nominal px):

* ``direct``: StableCascade_EmptyLatentImage + KSampler straight at the target size (what
  UltraPixel exists to fix), same steps and cfg;
* ``ultrapixel``: UltraPixel Stage C with the demo's modules, ``lr_size`` 512 (its LR picture is
  the ``base`` the structure metrics compare with);
* ``ultrapixel-san-off`` / ``ultrapixel-sigma-<v>`` (``--norm-variants``): the same with UltraPixel
  Scale-Aware Norm set to ``scale: off`` or a manual ``sigma_s``, to show what the norm changes.

``--native`` adds a row of direct samples at the native size (what the model draws best).

Samples come in batches of 16 (seeds ``--seed``, ``--seed`` + 1, ...), the same for every row.

Metrics (``demo/metrics.py``, the object threshold scaled to the 96 px native picture): objects
found (mean; target 1) and % with exactly one; IoU of the object mask and low-pass SSIM against
the LR picture (UltraPixel rows; for direct, against UltraPixel's LR picture of the same seed, i.e.
how far unrelated pictures are); fine detail (top spectral band at 1:1) ÷ direct sampling's at
the same size; the worst latent-cell border line ÷ the median (a seam anywhere shows as a high
value; this model's native samples score about 4 without one, from their sharp object edges);
the latent's std (the training latents' is 10, ``cascade_spec.DATA_STD``); wall time. Prints a
Markdown table and writes ``grid_<scale>x.png`` (the first ``--grid`` samples of each row, same
seeds) to ``--out``.
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

from bench_common import FIXTURE_PACK, PACK_ROOT, ComfyHost, register_pack  # also puts tests/ on sys.path
from harness.comfy_host import image_tensor

NOMINAL = 512       # the demo stage C's native size in Stable Cascade px (a 12² latent)
COMPRESSION = 42    # StableCascade_EmptyLatentImage's default: latent side = px // 42
BATCH = 16          # pictures per graph run (UltraPixel Stage C's batch_size maximum)


def cascade_graph(row: str, scale: int, samples: int, seed: int, steps: int, cfg: float) -> dict:
    """Demo Cascade -> ``row`` at ``scale`` × 512 nominal px; saves ``save`` (and ``lr_save`` for UltraPixel)."""
    side = NOMINAL * scale
    graph = {"demo": {"class_type": "UltraRes_DemoCascade", "inputs": {}}}
    pos, neg, vae = ["demo", 3], ["demo", 4], ["demo", 2]
    if row in ("direct", "native"):
        side = NOMINAL if row == "native" else side
        graph["empty"] = {"class_type": "StableCascade_EmptyLatentImage", "inputs": {
            "width": side, "height": side, "compression": COMPRESSION, "batch_size": samples}}
        graph["sample"] = {"class_type": "KSampler", "inputs": {
            "model": ["demo", 0], "positive": pos, "negative": neg, "latent_image": ["empty", 0], "seed": seed,
            "steps": steps, "cfg": cfg, "sampler_name": "euler_ancestral", "scheduler": "simple", "denoise": 1.0}}
        latent = ["sample", 0]
    else:
        extra = {}
        if row != "ultrapixel":
            norm = {"scale": "off", "sigma_s": 1.2} if row.endswith("san-off") else \
                {"scale": "manual", "sigma_s": float(row.rsplit("-", 1)[1])}
            graph["norm"] = {"class_type": "UltraRes_UltraPixelScaleAwareNorm", "inputs": {
                **norm, "strength": "auto", "decoder_strength": 0.5}}
            extra["norm"] = ["norm", 0]
        graph["sample"] = {"class_type": "UltraRes_UltraPixelStageC", "inputs": {
            "model": ["demo", 0], "ultrapixel_model": ["demo", 1], "positive": pos, "negative": neg,
            "width": side, "height": side, "seed": seed, "steps": steps, "cfg": cfg, "cfg_rescale": 0.7,
            "shift": 1.0, "batch_size": samples, "lr_size": NOMINAL, **extra}}
        latent = ["sample", 0]
        graph["lr_decode"] = {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 2], "vae": vae}}
        graph["lr_save"] = {"class_type": "SaveImage", "inputs": {"images": ["lr_decode", 0], "filename_prefix": "lr"}}
    graph["decode"] = {"class_type": "VAEDecode", "inputs": {"samples": latent, "vae": vae}}
    graph["save"] = {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": row}}
    graph["latent_save"] = {"class_type": "SaveLatent", "inputs": {"samples": latent, "filename_prefix": row}}
    return graph


def saved_latent(host: ComfyHost, result) -> torch.Tensor:
    """The latent the graph's SaveLatent node wrote."""
    from safetensors.torch import load_file

    f = result.outputs["latent_save"]["latents"][0]
    return load_file(str(host.work_dir / "output" / f["subfolder"] / f["filename"]))["latent_tensor"]


def grid_image(rows: dict[str, torch.Tensor], path: Path, n: int, cell: int = 192) -> None:
    """One line per row (label on the left), its first ``n`` pictures resized to ``cell`` px."""
    label = 150
    img = Image.new("RGB", (label + cell * n, cell * len(rows)), "white")
    draw = ImageDraw.Draw(img)
    for r, (name, images) in enumerate(rows.items()):
        draw.text((4, r * cell + cell // 2 - 6), name, fill="black")
        for i, picture in enumerate(images[:n]):
            arr = (picture.permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)
            resample = Image.NEAREST if arr.shape[0] < cell else Image.LANCZOS
            img.paste(Image.fromarray(arr).resize((cell, cell), resample), (label + i * cell, r * cell))
    img.save(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--comfyui", type=Path, required=True)
    p.add_argument("--scales", type=int, nargs="*", default=[2, 4], choices=[2, 3, 4])
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--rows", nargs="+", default=["direct", "ultrapixel"],
                   help="direct, ultrapixel, ultrapixel-san-off, ultrapixel-sigma-<value>")
    p.add_argument("--native", action="store_true", help="also a row of direct samples at the native size")
    p.add_argument("--grid", type=int, default=8, help="pictures per row in the grids")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--out", type=Path, default=Path("out/bench_quality_ultrapixel"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    register_pack()
    from ultrares.demo import metrics
    from ultrares.demo.cascade_spec import NATIVE_PX
    host = ComfyHost.boot(args.comfyui, Path(tempfile.mkdtemp(prefix="ultrares_quality_up_")),
                          packs={"ultrares": PACK_ROOT, "ultrares_testing": FIXTURE_PACK})
    args.out.mkdir(parents=True, exist_ok=True)
    min_px = round(metrics.MIN_OBJECT_PX * (NATIVE_PX / 128) ** 2)

    def run(row: str, scale: int) -> tuple[torch.Tensor, torch.Tensor | None, float, float]:
        """All ``--samples`` pictures of a row, in batches of at most BATCH (seed, seed + 1, ...)."""
        images, lrs, latents, start = [], [], [], time.perf_counter()
        for i, n in enumerate([BATCH] * (args.samples // BATCH) + [args.samples % BATCH]):
            if n:
                result = host.run(cascade_graph(row, scale, n, args.seed + i, args.steps, args.cfg))
                images.append(image_tensor(host.saved_images(result, "save")))
                latents.append(saved_latent(host, result))
                if row.startswith("ultrapixel"):
                    lrs.append(image_tensor(host.saved_images(result, "lr_save")))
        wall = time.perf_counter() - start
        return torch.cat(images), torch.cat(lrs) if lrs else None, torch.cat(latents).std().item(), wall

    print("| scale | row | objects (mean) | exactly one % | mask IoU to LR | SSIM to LR | fine detail ÷ direct "
          "| worst line | latent std | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    if args.native:
        images, _, std, wall = run("native", 1)
        found = np.array(metrics.count_objects(images, min_px))
        print(f"| 1× ({NATIVE_PX} px) | direct | {found.mean():.2f} | {100 * (found == 1).mean():.0f} | – | – | – | "
              f"{metrics.worst_line(images).mean():.2f} | {std:.2f} | {wall:.0f} |", flush=True)
        grid_image({"native": images}, args.out / "grid_1x.png", args.grid)
    for scale in args.scales:
        results = {row: run(row, scale) for row in args.rows}
        lr = next((r[1] for r in results.values() if r[1] is not None), None)
        direct = results.get("direct")
        reference_fine = metrics.fine_energy(direct[0]) if direct else float("nan")
        grid = {} if lr is None else {"LR (1x)": lr}
        for row, (images, own_lr, std, wall) in results.items():
            base = own_lr if own_lr is not None else lr
            found = np.array(metrics.count_objects(images, min_px))
            iou = f"{metrics.mask_iou(images, base).mean():.2f}" if base is not None else "–"
            ssim = f"{metrics.structure_ssim(images, base).mean():.2f}" if base is not None else "–"
            print(f"| {scale}× ({NATIVE_PX * scale} px) | {row} | {found.mean():.2f} | {100 * (found == 1).mean():.0f} "
                  f"| {iou} | {ssim} | {metrics.fine_energy(images) / reference_fine:.2f} "
                  f"| {metrics.worst_line(images).mean():.2f} | {std:.2f} | {wall:.0f} |", flush=True)
            grid[row] = images
        grid_image(grid, args.out / f"grid_{scale}x.png", args.grid)
    print(f"\nwrote the picture grids to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
