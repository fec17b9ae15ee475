"""The embedded demo model: shipped weights load through the nodes and behave as trained.

These pin what the demo exists to show: at its 128 px training size it draws one object; sampled
directly at 4× the side it repeats the object; Pixelsmith and FreeScale keep one.
"""
from __future__ import annotations

import math

import kornia
import numpy as np
import pytest
import torch

from harness.comfy_host import image_tensor
from harness.graphs import demo_base_graph, demo_method_graph
from harness.pack import DEMO_WORKFLOW
from harness.workflow_format import load_prompt

SAMPLES = 8


def metrics(host):
    """The pack's ``demo.metrics`` and ``demo.data`` modules, as loaded by ComfyUI."""
    import importlib

    pack = host.module_of("UltraRes_DemoModel").__name__.rsplit(".nodes.", 1)[0]
    return importlib.import_module(f"{pack}.demo.metrics"), importlib.import_module(f"{pack}.demo.data")


def graph(*methods: str) -> dict:
    """Base batch of blue squares (seed 11, 20 steps, cfg 4) plus ``methods`` at 4× the side."""
    nodes = demo_base_graph(SAMPLES, 11, 20, 4.0, "blue square")
    for method in methods:
        nodes.update(demo_method_graph(method, 4, SAMPLES, 11, 20, 4.0))
    return nodes


def test_shipped_weights_load_as_comfyui_models(host):
    import comfy.model_base
    import comfy.model_patcher
    import comfy.sd

    nodes = host.module_of("UltraRes_DemoModel")
    model, vae = nodes.load_demo_model()
    assert isinstance(model, comfy.model_patcher.ModelPatcher)
    assert isinstance(model.model, comfy.model_base.SDXL)
    assert isinstance(vae, comfy.sd.VAE) and vae.spacial_compression_encode() == 8 and vae.latent_channels == 4
    blocks = model.model.diffusion_model
    attn = [n for n, _ in blocks.named_modules() if n.endswith("attn1") or n.endswith("attn2")]
    blocks_with_attention = {".".join(n.split(".")[:2]) for n in attn if n.startswith("input_blocks")}
    # SDXL's layout: input blocks 4-5 are the second level, 7-8 the third.
    assert {"input_blocks.4", "input_blocks.7"} <= blocks_with_attention, "attention at two or more levels"
    positive, negative = nodes.demo_conditioning("green triangle")
    assert positive[0][0].shape[-1] == negative[0][0].shape[-1] == 64
    assert not torch.equal(positive[0][0], negative[0][0])
    with pytest.raises(ValueError, match="object"):
        nodes.demo_conditioning("purple cat")

    # The VAE reconstructs its training images closely (PSNR on procedural 128² images).
    m, data = metrics(host)
    g = torch.Generator().manual_seed(5)
    images = data.render(data.random_classes(4, g), g)
    with torch.no_grad():
        recon = vae.decode(vae.encode(images.permute(0, 2, 3, 1))).permute(0, 3, 1, 2).float()
    psnr = 10 * torch.log10(1 / (recon - images).pow(2).mean())
    assert psnr > 22, f"VAE PSNR {psnr:.1f} dB"  # 23.3 dB as shipped (the 8 px stripes are lost)
    assert m.count_objects(recon) == [1, 1, 1, 1]


def test_base_render_has_one_object_and_direct_4x_repeats_it(host):
    m, _ = metrics(host)
    result = host.run(graph("direct"))
    base = m.count_objects(image_tensor(host.saved_images(result, "base_save")))
    direct = m.count_objects(image_tensor(host.saved_images(result, "direct.save")))
    assert base.count(1) >= SAMPLES - 1, base
    assert np.mean(direct) >= 2 and direct.count(1) <= SAMPLES // 4, direct


@pytest.mark.parametrize("method", ["pixelsmith-fast", "freescale-normal"])
def test_methods_repeat_the_object_far_less_than_direct_sampling_at_4x(host, method):
    m, _ = metrics(host)
    result = host.run(graph("direct", method))
    images = image_tensor(host.saved_images(result, f"{method}.save"))
    assert images.shape[-2:] == (512, 512)
    counts = m.count_objects(images)
    direct = m.count_objects(image_tensor(host.saved_images(result, "direct.save")))
    assert counts.count(1) >= direct.count(1) + SAMPLES // 2, (counts, direct)
    assert np.median(counts) < np.median(direct) / 2, (counts, direct)
    # No seam on Pixelsmith's 128 px patch grid (1 = the grid lines jump no more than any cell border).
    assert float(m.seam_score(images, 128).mean()) <= 1.1


def test_quality_metrics_see_seams_detail_and_structure(host):
    """The benchmark's metrics on images with a known answer: a seam on the 128 px grid, fine
    detail, a moved object."""
    m, data = metrics(host)
    g = torch.Generator().manual_seed(3)
    images = data.render(data.random_classes(4, g), g, size=512)
    seamed = images.clone()
    seamed[..., :, 256:] = (seamed[..., :, 256:] * 0.9).clamp(0, 1)  # a step at x = 256
    assert float(m.seam_score(images, 128).mean()) < 1.3
    assert float(m.seam_score(seamed, 128).mean()) > 1.5
    assert float(m.worst_line(seamed).mean()) > float(m.worst_line(images).mean())
    native = data.render(data.random_classes(4, g), g)  # 128 px: the 4 px grain is native-scale detail
    blurred = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(native, (2, 1, 2, 1), mode="reflect"), 4, 1)
    assert m.fine_energy(blurred) < 0.4 * m.fine_energy(native)  # ≈ 0.27: object edges keep some
    small = torch.nn.functional.interpolate(images, size=(128, 128), mode="area")
    assert float(m.mask_iou(images, small).min()) > 0.9
    assert float(m.mask_iou(images.roll(200, dims=-1), small).max()) < 0.5
    assert bool(m.hue_kept(images, small).all())
    assert not bool(m.hue_kept(images[:, [1, 2, 0]], small).any())  # every colour moved by 120°

    def hue_turned(degrees: float) -> torch.Tensor:
        hsv = kornia.color.rgb_to_hsv(images)
        hsv[:, 0] = torch.where(m.object_mask(images), (hsv[:, 0] + math.radians(degrees)) % math.tau, hsv[:, 0])
        return kornia.color.hsv_to_rgb(hsv)

    assert bool(m.hue_kept(hue_turned(20), images).all())  # a shade: kept
    assert not bool(m.hue_kept(hue_turned(40), images).any())  # red → orange: changed


def test_shipped_demo_workflow_renders_every_image(host):
    prompt = load_prompt(DEMO_WORKFLOW, host)
    result = host.run(prompt)
    sizes = {}
    for node_id, node in prompt.items():
        if node["class_type"] == "SaveImage":
            sizes[node["inputs"]["filename_prefix"].split("/")[-1]] = \
                tuple(host.saved_images(result, node_id).shape[1:3])
    assert sizes == {"0_base_128": (128, 128), "1_direct_512": (512, 512), "2_pixelsmith_256": (256, 256),
                     "3_pixelsmith_512": (512, 512), "4_freescale_256": (256, 256), "5_freescale_512": (512, 512),
                     "6_ultrapixel_lr_96": (96, 96), "7_ultrapixel_192": (192, 192), "8_ultrapixel_384": (384, 384),
                     "9_direct_cascade_384": (384, 384), "10_dit_base_64": (64, 64), "11_dit_direct_256": (256, 256),
                     "12_dit_pixelsmith_256": (256, 256), "13_dit_freescale_256": (256, 256)}
