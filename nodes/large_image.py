"""Save Large Image: tile-by-tile VAE decode streamed into a PNG or BigTIFF file, bounded RAM.

The end of the Pixelsmith gigapixel path. The official code (Thanos-DB/Pixelsmith@28c992b
``autoencoder_kl.py:324-446``, tiled decode) decodes 64-latent tiles and assembles the whole image in CPU
RAM; here each row of latent tiles is decoded, blended with its neighbours (``kernels/tiling.py``:
separable linear ramps normalised by the weight sum) and the rows no later tile touches are written to disk at once, so RAM holds about one band
of tiles whatever the image size. The file is written under a ``.part`` name and renamed when
complete. RAM and disk needs are estimated first (logged and shown in the node's UI text) and
the node refuses clearly when they do not fit.
"""
from __future__ import annotations

import logging
import os
import shutil
from typing import TYPE_CHECKING

import comfy.model_management
import comfy.utils
import folder_paths
import numpy as np
import psutil
import torch
from comfy_api.latest import io
from PIL import Image

from ..kernels.large_image import BigTiffStreamWriter, PngStreamWriter, RowPreview
from ..kernels.tiling import starts, tile_weights
from ._checks import check_filename_prefix, check_latent_matches_vae, check_numbers, format_bytes
from ._schema import advanced

if TYPE_CHECKING:
    from comfy.sd import VAE

log = logging.getLogger(__name__)

FORMATS = ("png", "tiff")
TIFF_COMPRESSION = ("deflate", "none")
PREVIEW_MAX_SIDE = 1024
TILES_PER_DECODE = 8  # tiles decoded per VAE call
DISK_MARGIN = 64 << 20  # bytes kept free besides the file


def estimate_needs(latent_hw: tuple[int, int], ratio: int, tile: int, fmt: str) -> tuple[int, int]:
    """(disk bytes, RAM bytes) for one image: upper bounds (incompressible data)."""
    H, W = latent_hw[0] * ratio, latent_hw[1] * ratio
    raw = H * W * 3
    if fmt == "png":
        disk = H * (W * 3 + 1) + (H * (W * 3 + 1)) // 1000 + (1 << 16)
    else:
        disk = raw + raw // 1000 + (1 << 16) + 16 * (H + 1)
    band = min(tile, latent_hw[0]) * ratio * 2  # accumulator rows at most
    tile_px = min(tile, latent_hw[0]) * ratio * min(tile, latent_hw[1]) * ratio
    ram = band * W * 4 * 4 + TILES_PER_DECODE * tile_px * 3 * 4 * 2 + band * W * 3 * 2
    return disk, ram


def output_path(prefix: str, width: int, height: int) -> tuple[str, str, int, str]:
    """ComfyUI's ``(folder, file name, counter, subfolder)`` for ``prefix``, the folder created.

    Refuses, naming ``filename_prefix``, a prefix outside the output folder and a folder that
    cannot be created (a file in its place, no permission).
    """
    out_dir = folder_paths.get_output_directory()
    try:
        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, out_dir, width, height)
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise ValueError(f"filename_prefix: cannot create the folder for {prefix!r} in {out_dir}: "
                         f"{e.strerror or e}. Use another prefix or make the output folder writable.") from e
    except Exception as e:  # ComfyUI raises a bare Exception for a path outside the output folder
        raise ValueError(f"filename_prefix: {prefix!r} points outside the output folder {out_dir}; "
                         f"use a name inside it, such as 'UltraRes/pixelsmith'.") from e
    return folder, filename, counter, subfolder


def latent_cells(name: str, px: int, ratio: int) -> int:
    """``px`` image px as latent cells of a VAE with ``ratio`` px per cell; a size off the cells is refused."""
    if px % ratio:
        raise ValueError(f"{name}: {px} px is not a whole number of this VAE's {ratio} px latent cells; use "
                         f"{max(round(px / ratio), 1) * ratio} px.")
    return px // ratio


class SaveLargeImage(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="UltraRes_SaveLargeImage",
            display_name="Save Large Image (tiled decode → PNG/BigTIFF)",
            category="UltraRes/Pixelsmith",
            description=(
                "Saves a huge image (tens of thousands of px per side) straight to a PNG or BigTIFF file "
                "without running out of memory; start with the defaults (png, tile_size 512, overlap 64). "
                "Decodes a latent of any size tile by tile with the VAE (overlapping tiles, linear blend) "
                "and streams the rows straight into a PNG or BigTIFF file in the output folder, with RAM "
                "bounded by one band of tiles: the end of a gigapixel cascade (Pixelsmith 32768² and "
                "up) where a full IMAGE would not fit in memory. Estimates the RAM and disk it needs "
                "first and refuses clearly when they do not fit; writes to a .part file renamed when "
                "complete. Any VAE with a spatial latent. Cost: one VAE decode of the image plus about "
                "(tile+overlap)/tile extra for the overlaps; deflate/PNG compression is CPU-bound. "
                "Outputs a small preview IMAGE."),
            inputs=[
                io.Latent.Input("samples", tooltip="The image to save, as a latent (e.g. from the last Pixelsmith "
                                                   "Upscale stage); it is decoded here."),
                io.Vae.Input("vae", tooltip="The VAE of the model that made the latent; it decodes the tiles."),
                io.String.Input("filename_prefix", default="UltraRes/pixelsmith",
                                tooltip="Where the file goes and how it is named; try 'UltraRes/pixelsmith'. File "
                                        "name prefix in the output folder (subfolders allowed)."),
                io.Combo.Input("format", options=list(FORMATS), default="png",
                               tooltip="The file type; png opens almost everywhere, try it first. "
                                       "png: 8-bit RGB PNG, written row by row (limit 2^31 px per side). "
                                       "tiff: 8-bit RGB BigTIFF with strips (no 4 GiB limit)."),
                io.Combo.Input("tiff_compression", options=list(TIFF_COMPRESSION), default="deflate",
                               tooltip="deflate = smaller file but slower to write, none = faster but larger; try "
                                       "deflate. BigTIFF strip compression. Ignored for png.",
                               **advanced()),
                io.Int.Input("tile_size", default=512, min=64, max=4096, step=8,
                             tooltip="Larger = fewer seams and fewer VAE calls, but more VAE memory; try 512. Decode "
                                     "tile side in image px, a whole number of the VAE's latent cells (512 = 64 "
                                     "latent px on SD/SDXL, as the official code; 32 cells on Flux.2's 16 px).",
                             **advanced()),
                io.Int.Input("overlap", default=64, min=0, max=2048, step=8,
                             tooltip="Raise it if you see seams between tiles; try 64. Tile overlap in image px "
                                     "(a whole number of latent cells), blended with a linear ramp; 64-128 hides "
                                     "seams; must be below tile_size.",
                             **advanced()),
            ],
            outputs=[io.Image.Output(display_name="preview",
                                     tooltip=f"A small look at the saved image, to check it; the full image is in "
                                             f"the file. Area-downsampled (longest side <= {PREVIEW_MAX_SIDE} px).")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, samples: dict, vae: VAE, filename_prefix: str, format: str, tiff_compression: str,  # noqa: A002
                tile_size: int, overlap: int) -> io.NodeOutput:
        check_numbers(cls, locals())
        fmt = format
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
        if tiff_compression not in TIFF_COMPRESSION:
            raise ValueError(f"tiff_compression must be one of {TIFF_COMPRESSION}, got {tiff_compression!r}")
        if not 0 <= overlap < tile_size:
            raise ValueError(f"overlap ({overlap} px) must be in [0, tile_size={tile_size} px); lower overlap or "
                             "raise tile_size")
        latent = samples["samples"]
        check_latent_matches_vae(latent, vae, "samples")
        check_filename_prefix(filename_prefix)
        B, _, h, w = latent.shape
        ratio = int(vae.spacial_compression_decode())
        tile_size, overlap = (latent_cells(name, px, ratio) for name, px in (("tile_size", tile_size),
                                                                            ("overlap", overlap)))
        H, W = h * ratio, w * ratio

        full_folder, filename, counter, subfolder = output_path(filename_prefix, W, H)
        disk_one, ram = estimate_needs((h, w), ratio, tile_size, fmt)
        disk = disk_one * B
        free_disk = shutil.disk_usage(full_folder).free
        free_ram = psutil.virtual_memory().available
        summary = (f"Save Large Image: {B} × {W}x{H} px {fmt}; needs up to {format_bytes(disk)} disk "
                   f"+ {format_bytes(DISK_MARGIN)} kept free ({format_bytes(free_disk)} free in {full_folder}) "
                   f"and ~{format_bytes(ram)} RAM ({format_bytes(free_ram)} available)")
        log.info(summary)
        if disk + DISK_MARGIN > free_disk:
            raise ValueError(f"{summary}: not enough disk space. Free space or pick another output folder.")
        if ram > free_ram:
            raise ValueError(f"{summary}: not enough RAM. Lower tile_size.")

        ys, xs = starts(h, tile_size, tile_size - overlap), starts(w, tile_size, tile_size - overlap)
        pbar = comfy.utils.ProgressBar(B * len(ys) * len(xs))
        previews, ui_images, paths = [], [], []
        for b in range(B):
            name = f"{filename}_{counter + b:05}_.{'png' if fmt == 'png' else 'tif'}"
            path = os.path.join(full_folder, name)
            try:
                preview = cls._write_one(latent[b:b + 1], vae, path, fmt, tiff_compression, tile_size, overlap,
                                         ratio, ys, xs, pbar)
            except OSError as e:
                raise ValueError(f"filename_prefix: cannot write {path}: {e.strerror or e}. Check that the output "
                                 f"folder is writable and has free space; nothing was left behind.") from e
            previews.append(preview)
            paths.append(path)
            pv_name = f"{filename}_{counter + b:05}_preview.png"
            Image.fromarray(np.clip(preview.numpy() * 255.0, 0, 255).astype(np.uint8)).save(
                os.path.join(full_folder, pv_name))
            ui_images.append({"filename": pv_name, "subfolder": subfolder, "type": "output"})
        log.info("Save Large Image: wrote %s", ", ".join(paths))
        sizes = {tuple(p.shape) for p in previews}
        preview_batch = torch.stack(previews) if len(sizes) == 1 else previews[0][None]
        return io.NodeOutput(preview_batch, ui={"images": ui_images, "text": [summary, *paths]})

    @staticmethod
    def _write_one(latent: torch.Tensor, vae: VAE, path: str, fmt: str, compression: str, tile: int, overlap: int,
                   ratio: int, ys: list[int], xs: list[int], pbar: comfy.utils.ProgressBar) -> torch.Tensor:
        """Decode ``latent`` (1, C, h, w) tile row by tile row into ``path``; returns the preview."""
        _, _, h, w = latent.shape
        H, W = h * ratio, w * ratio
        th, tw = min(tile, h), min(tile, w)
        ramp = overlap * ratio
        preview = RowPreview(H, W, PREVIEW_MAX_SIDE)
        part = path + ".part"
        try:
            with open(part, "wb") as f:
                writer = (PngStreamWriter(f, W, H) if fmt == "png"
                          else BigTiffStreamWriter(f, W, H, rows_per_strip=16, compression=compression))
                acc_top = 0
                acc = torch.zeros(0, W, 3)
                wsum = torch.zeros(0, W, 1)
                for i, y0 in enumerate(ys):
                    top, bottom = y0 * ratio, (y0 + th) * ratio
                    if bottom > acc_top + acc.shape[0]:  # extend the band accumulator downwards
                        grow = bottom - (acc_top + acc.shape[0])
                        acc = torch.cat([acc, torch.zeros(grow, W, 3)])
                        wsum = torch.cat([wsum, torch.zeros(grow, W, 1)])
                    for j0 in range(0, len(xs), TILES_PER_DECODE):
                        comfy.model_management.throw_exception_if_processing_interrupted()
                        group = xs[j0:j0 + TILES_PER_DECODE]
                        tiles = torch.cat([latent[..., y0:y0 + th, x0:x0 + tw] for x0 in group])
                        pixels = vae.decode(tiles)[..., :3].float().cpu()  # (n, th·r, tw·r, 3)
                        if pixels.shape[1:3] != (th * ratio, tw * ratio):
                            raise ValueError(f"vae: decoded tile is {tuple(pixels.shape[1:3])}, expected "
                                             f"{(th * ratio, tw * ratio)}; this VAE is not supported here.")
                        for k, x0 in enumerate(group):
                            left = x0 * ratio
                            wt = tile_weights(top, left, th * ratio, tw * ratio, (H, W), ramp)[..., None]
                            rows = slice(top - acc_top, bottom - acc_top)
                            cols = slice(left, left + tw * ratio)
                            acc[rows, cols] += pixels[k] * wt
                            wsum[rows, cols] += wt
                            pbar.update(1)
                    done_to = ys[i + 1] * ratio if i + 1 < len(ys) else H  # rows no later tile touches
                    n_done = done_to - acc_top
                    if n_done > 0:
                        rows_f = acc[:n_done] / wsum[:n_done]
                        writer.write_rows((rows_f * 255.0).clamp(0, 255).to(torch.uint8))
                        preview.add(rows_f)
                        acc, wsum = acc[n_done:].clone(), wsum[n_done:].clone()
                        acc_top = done_to
                writer.close()
            os.replace(part, path)
        except BaseException:
            if os.path.exists(part):
                os.remove(part)
            raise
        return preview.result().clamp(0, 1)


NODES = (SaveLargeImage,)
