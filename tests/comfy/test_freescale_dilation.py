"""FreeScale Restrained Dilation on the real host: which convs, which steps, always restored."""
from __future__ import annotations

import numpy as np
import pytest

SPEC_SDXL_LAYERS = {  # official list (ali-vilab/FreeScale@d5a2256 pipeline_freescale.py:901-945) in ComfyUI names
    "input_blocks.6.0.op",
    "input_blocks.7.0.in_layers.2", "input_blocks.7.0.out_layers.3",
    "input_blocks.8.0.in_layers.2", "input_blocks.8.0.out_layers.3",
    "middle_block.0.in_layers.2", "middle_block.0.out_layers.3",
    "middle_block.2.in_layers.2", "middle_block.2.out_layers.3",
}
# Tiny SD1.5-class UNet (2 levels, 1 res block): the downsample into level 1, its res block, middle.
TINY_SD15_LAYERS = {
    "input_blocks.2.0.op",
    "input_blocks.3.0.in_layers.2", "input_blocks.3.0.out_layers.3",
    "middle_block.0.in_layers.2", "middle_block.0.out_layers.3",
    "middle_block.2.in_layers.2", "middle_block.2.out_layers.3",
}


def graph(kind="sdxl", width=128, height=128, steps=4, dilation=None, tag="probe", interrupt_at=0, seed=3):
    """Tiny checkpoint -> (Restrained Dilation) -> probe -> KSampler -> decode -> save."""
    from comfy_execution.graph_utils import GraphBuilder

    g = GraphBuilder(prefix="")
    ckpt = g.node("UltraResTest_TinyCheckpoint", kind=kind, seed=0)
    model = ckpt.out(0)
    if dilation is not None:
        model = g.node("UltraRes_FreeScaleRestrainedDilation", model=model, **dilation).out(0)
    model = g.node("UltraResTest_FreeScaleProbe", model=model, tag=tag, interrupt_at=interrupt_at).out(0)
    pos = g.node("CLIPTextEncode", clip=ckpt.out(1), text="a castle on a hill")
    neg = g.node("CLIPTextEncode", clip=ckpt.out(1), text="blurry")
    latent = g.node("EmptyLatentImage", width=width, height=height, batch_size=1)
    ks = g.node("KSampler", model=model, positive=pos.out(0), negative=neg.out(0), latent_image=latent.out(0),
                seed=seed, steps=steps, cfg=5.0, sampler_name="euler", scheduler="ddim_uniform", denoise=1.0)
    dec = g.node("VAEDecode", samples=ks.out(0), vae=ckpt.out(2))
    save = g.node("SaveImage", images=dec.out(0), filename_prefix="ultrares_dilation")
    return g.finalize(), save.id


def test_factor_from_actual_width(host, records):
    # 256 px wide -> d = 256 // 64 = 4; height does not matter (width only, as the official code).
    g, _ = graph(width=256, height=64, steps=2, dilation={"dilate_percent": 1.0, "base_size": 64}, tag="wide")
    host.run(g)
    assert [set(r["dilation"].values()) for r in records] == [{4}, {4}]
    g, _ = graph(width=64, height=256, steps=2, dilation={"dilate_percent": 1.0, "base_size": 64}, tag="tall")
    host.run(g)
    assert [r["dilation"] for r in records if r["tag"] == "tall"] == [{}, {}], "width 64 = base: no dilation"


def test_restored_after_calls_and_after_interrupt(host, records):
    dil = {"dilate_percent": 0.75, "base_size": 64}
    g, save = graph(tag="reference")
    reference = host.saved_images(host.run(g), save)[0]

    g, save_d = graph(dilation=dil, tag="dilated")
    dilated = host.saved_images(host.run(g), save_d)[0]
    assert np.abs(dilated.astype(int) - reference.astype(int)).mean() > 0.5, "dilation changes the result"

    g, _ = graph(dilation=dil, tag="interrupted", interrupt_at=2)
    with pytest.raises(InterruptedError):
        host.run(g)
    assert records[-1]["tag"] == "interrupted" and records[-1]["dilation"], "interrupted while dilated"

    # Same model object (the checkpoint node is cached), no patch: identical to the first run.
    g, save_a = graph(tag="afterwards")
    after = host.saved_images(host.run(g), save_a)[0]
    assert np.array_equal(after, reference)
    assert all(not r["dilation"] for r in records if r["tag"] in ("reference", "afterwards"))
    ref_x = [r["x"] for r in records if r["tag"] == "reference"]
    after_x = [r["x"] for r in records if r["tag"] == "afterwards"]
    assert all((a == b).all() for a, b in zip(ref_x, after_x, strict=True))


def test_zero_percent_is_identity(host, records):
    g, save = graph(tag="plain", seed=8)
    plain = host.saved_images(host.run(g), save)[0]
    g, save = graph(dilation={"dilate_percent": 0.0, "base_size": 64}, tag="off", seed=8)
    off = host.saved_images(host.run(g), save)[0]
    assert np.array_equal(plain, off)


# Last in the file, so each tiny model is built once (SD1.5-class last).
@pytest.mark.parametrize("kind, expected", [("sdxl", SPEC_SDXL_LAYERS), ("sd15", TINY_SD15_LAYERS)])
def test_layers_and_steps(host, records, kind, expected):
    # base 64 px: a 128-px-wide latent is "2× the native width" -> d = 2; 3 of 4 steps dilated.
    g, _ = graph(kind=kind, width=128, height=64, steps=4,
                 dilation={"dilate_percent": 0.75, "base_size": 64}, tag=f"layers-{kind}")
    host.run(g)
    calls = [r for r in records if r["tag"] == f"layers-{kind}"]
    assert len(calls) == 4
    assert [set(r["dilation"]) for r in calls] == [expected] * 3 + [set()], "dilated steps i < round(0.75·4) = 3"
    assert all(set(r["dilation"].values()) == {2} and set(r["padding"].values()) == {2} for r in calls[:3])
    sigmas = [r["sigma"] for r in calls]
    assert sigmas == sorted(sigmas, reverse=True)
