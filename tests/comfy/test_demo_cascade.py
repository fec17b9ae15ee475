"""The embedded Stable Cascade demo: shipped stage C, decoder and UltraPixel modules, as trained.

These pin what the demo exists to show: at its native 12² latent the stage C draws one disc;
sampled directly at 4× the side it repeats the disc; UltraPixel Stage C with the shipped modules
keeps one, laid out as its LR picture.
"""
from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.comfy_host import image_tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_quality_ultrapixel import cascade_graph  # noqa: E402  (the benchmark's own graphs)

SAMPLES = 8
STEPS = 20


def pack_module(host, name: str):
    pack = host.module_of("UltraRes_DemoCascade").__name__.rsplit(".nodes.", 1)[0]
    return importlib.import_module(f"{pack}.{name}")


def counts(host, images: torch.Tensor) -> list[int]:
    metrics, spec = pack_module(host, "demo.metrics"), pack_module(host, "demo.cascade_spec")
    return metrics.count_objects(images, round(metrics.MIN_OBJECT_PX * (spec.NATIVE_PX / 128) ** 2))


@pytest.fixture(scope="module")
def ultrapixel_4x(host):
    """(pictures, LR pictures) of UltraPixel Stage C at 4× (2048 nominal px), seed 1 (the benchmark's)."""
    result = host.run(cascade_graph("ultrapixel", 4, SAMPLES, 1, STEPS, 4.0))
    return image_tensor(host.saved_images(result, "save")), image_tensor(host.saved_images(result, "lr_save"))


def test_shipped_files_load_as_comfyui_models_and_through_the_strict_loader(host, tmp_path):
    import comfy.model_base
    import comfy.model_patcher
    import comfy.sd
    import folder_paths

    nodes = host.module_of("UltraRes_DemoCascade")
    model, ultrapixel, vae, positive, negative = nodes.load_demo_cascade()
    assert isinstance(model, comfy.model_patcher.ModelPatcher)
    assert isinstance(model.model, comfy.model_base.StableCascade_C)
    assert float(model.model.model_sampling.shift) == 1.0
    assert isinstance(vae, comfy.sd.VAE) and vae.spacial_compression_decode() == 8 and vae.latent_channels == 16
    assert ultrapixel.channels() == {"E0": 64, "E1": 96, "D0": 96, "D1": 64}
    for f in (nodes.CASCADE_WEIGHTS, nodes.ULTRAPIXEL_WEIGHTS):
        assert f.stat().st_size <= 10 * 2**20, f"{f.name} should ship in the pack"
    assert positive[0][0].shape == negative[0][0].shape == (1, 4, 64)
    assert not torch.equal(positive[0][0], negative[0][0])

    # The modules file in models/ultrapixel loads through UltraPixel Loader (strict keys) into the same weights.
    folder = tmp_path / "ultrapixel"
    folder.mkdir()
    shutil.copy(nodes.ULTRAPIXEL_WEIGHTS, folder / "demo.safetensors")
    folder_paths.add_model_folder_path("ultrapixel", str(folder))
    loaded = host.module_of("UltraRes_UltraPixelLoader").UltraPixelLoader.execute("demo.safetensors", "default")
    for name, tensor in loaded.result[0].modules.state_dict().items():
        assert torch.equal(tensor, ultrapixel.modules.state_dict()[name]), name


def test_native_draws_one_disc_and_direct_4x_repeats_it(host):
    native = image_tensor(host.saved_images(host.run(cascade_graph("native", 1, SAMPLES, 1, STEPS, 4.0)), "save"))
    assert native.shape[-2:] == (96, 96)
    one = counts(host, native)
    assert one.count(1) >= SAMPLES - 2, one  # 88 % over 16 samples as shipped
    direct = image_tensor(host.saved_images(host.run(cascade_graph("direct", 4, SAMPLES, 1, STEPS, 4.0)), "save"))
    assert direct.shape[-2:] == (384, 384)
    found = counts(host, direct)
    assert np.mean(found) >= 2 and found.count(1) <= SAMPLES // 4, found


def test_ultrapixel_keeps_one_disc_at_4x_where_its_lr_picture_has_it(host, ultrapixel_4x):
    images, lr = ultrapixel_4x
    assert images.shape[-2:] == (384, 384) and lr.shape[-2:] == (96, 96)
    found = counts(host, images)
    assert found.count(1) >= SAMPLES - 1, found  # all 8 as shipped; direct sampling: at most 2
    metrics = pack_module(host, "demo.metrics")
    iou = metrics.mask_iou(images, lr)
    assert float(iou.median()) > 0.75, iou  # the disc where the LR picture put it (median 0.85 as shipped)
