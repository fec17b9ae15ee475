"""Save Large Image on the real host: streamed PNG/BigTIFF match a normal VAE decode; refusals."""
from __future__ import annotations

import collections
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.comfy_host import WorkflowError


def save_graph(fmt="png", compression="deflate", width=320, height=200, tile=192, overlap=64, prefix="large_test"):
    from comfy_execution.graph_utils import GraphBuilder

    g = GraphBuilder(prefix="")
    ckpt = g.node("UltraResTest_TinyCheckpoint", kind="sdxl", seed=0)
    latent = g.node("UltraResTest_SeededLatent", width=width, height=height, batch=1, seed=4)
    large = g.node("UltraRes_SaveLargeImage", samples=latent.out(0), vae=ckpt.out(2), filename_prefix=prefix,
                   format=fmt, tiff_compression=compression, tile_size=tile, overlap=overlap)
    dec = g.node("VAEDecode", samples=latent.out(0), vae=ckpt.out(2))
    save = g.node("SaveImage", images=dec.out(0), filename_prefix="large_ref")
    return g.finalize(), large.id, save.id


def written(result, node_id) -> Path:
    texts = result.outputs[node_id]["text"]
    return Path(texts[-1])


def test_png_and_tiff_match_a_plain_decode(host):
    graph, large_id, save_id = save_graph("png")
    result = host.run(graph)
    ref = host.saved_images(result, save_id)[0].astype(int)
    png_path = written(result, large_id)
    assert png_path.suffix == ".png" and not Path(str(png_path) + ".part").exists()
    png = np.asarray(Image.open(png_path)).astype(int)
    assert png.shape == ref.shape == (200, 320, 3)
    diff = np.abs(png - ref)
    # Tile-blend tolerance (the tiny random TAESD has a wide receptive field, so tile borders
    # differ a little over a wide band); the image as a whole matches.
    assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 16, (diff.mean(), diff.max())
    # A preview of the right aspect is shown in the UI.
    pv = result.outputs[large_id]["images"][0]
    assert pv["type"] == "output"

    for compression in ("deflate", "none"):
        graph, large_id, _ = save_graph("tiff", compression)
        result = host.run(graph)
        tif_path = written(result, large_id)
        assert tif_path.suffix == ".tif"
        with open(tif_path, "rb") as f:
            assert f.read(4) == b"II+\x00", "BigTIFF header"
        tif = np.asarray(Image.open(tif_path)).astype(int)
        assert np.array_equal(tif, png), "same decode, same pixels in both formats"


def test_tiles_blend_without_visible_seams_vs_single_tile(host):
    """One tile covering everything equals the plain decode; small tiles stay within tolerance."""
    graph, large_id, save_id = save_graph("png", tile=512, overlap=64, prefix="large_one_tile")
    result = host.run(graph)
    one = np.asarray(Image.open(written(result, large_id))).astype(int)
    ref = host.saved_images(result, save_id)[0].astype(int)
    assert np.abs(one - ref).max() <= 1


def test_refuses_when_disk_is_too_small(host, monkeypatch):
    Usage = collections.namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**6, 10**6 - 1000, 1000))
    graph, _, _ = save_graph("png", prefix="large_refused")
    with pytest.raises(WorkflowError, match="not enough disk space"):
        host.run(graph)
    import folder_paths
    assert not list(Path(folder_paths.get_output_directory()).glob("large_refused*"))


def test_no_seam_on_the_vae_tile_grid_with_the_demo_model(host):
    """A real image (the demo model at 384², its trained VAE) decoded in 128 px tiles (16 latent px) with
    32 px of overlap: the benchmark's seam score on the tile grid stays at the plain decode's level."""
    import importlib

    import torch

    pack = host.module_of("UltraRes_DemoModel").__name__.rsplit(".nodes.", 1)[0]
    metrics = importlib.import_module(f"{pack}.demo.metrics")
    graph = {
        "model": {"class_type": "UltraRes_DemoModel", "inputs": {}},
        "prompt": {"class_type": "UltraRes_DemoPrompt", "inputs": {"object": "green triangle"}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 384, "height": 384, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["model", 0], "positive": ["prompt", 0], "negative": ["prompt", 1], "latent_image": ["empty", 0],
            "seed": 4, "steps": 8, "cfg": 4.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "large": {"class_type": "UltraRes_SaveLargeImage", "inputs": {
            "samples": ["sample", 0], "vae": ["model", 1], "filename_prefix": "large_demo_seams", "format": "png",
            "tiff_compression": "deflate", "tile_size": 128, "overlap": 32}},
        "plain": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["model", 1]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["plain", 0], "filename_prefix": "large_demo_ref"}},
    }
    result = host.run(graph)
    tiled = torch.from_numpy(np.asarray(Image.open(written(result, "large"))).copy()).permute(2, 0, 1)[None] / 255
    plain = torch.from_numpy(host.saved_images(result, "save").copy()).permute(0, 3, 1, 2) / 255
    stride_px = (16 - 4) * 8  # tiles start every 12 latent px
    seam_tiled, seam_plain = (float(metrics.seam_score(x.float(), stride_px).mean()) for x in (tiled, plain))
    assert seam_tiled < 1.1 and seam_tiled < seam_plain + 0.1, (seam_tiled, seam_plain)
