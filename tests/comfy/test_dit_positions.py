"""Pixelsmith on a DiT: each patch's rotary positions (local / global) and refused conditioning."""
from __future__ import annotations

import pytest
import torch

from harness.comfy_host import WorkflowError
from harness.records import cleared_records


@pytest.fixture
def rec(host):
    yield from cleared_records(host, "UltraResTest_SeededLatent", "LATENTS", "SOURCES", "CALLS")


def flux_graph(positions="local", mode="faithful", seed=1, reference=False, tag="out", user_rope=None):
    """Tiny Flux → (ModelProbe) → Pixelsmith SAMPLER on a 32×16 latent with 16² patches, 3 steps."""
    from comfy_execution.graph_utils import GraphBuilder

    g = GraphBuilder(prefix="")
    flux = g.node("UltraResTest_TinyFlux", seed=0)
    model = flux.out(0)
    if user_rope is not None:
        model = g.node("UltraResTest_RopeOptions", model=model, scale=user_rope[0], shift=user_rope[1]).out(0)
    model = g.node("UltraResTest_ModelProbe", model=model, tag=tag).out(0)
    pos, neg = flux.out(1), flux.out(2)
    latent = g.node("UltraResTest_SeededLatent", width=256, height=128, batch=1, seed=5, channels=16)
    if reference:
        pos = g.node("ReferenceLatent", conditioning=pos, latent=latent.out(0)).out(0)
    guider = g.node("CFGGuider", model=model, positive=pos, negative=neg, cfg=3.0)
    sigmas = g.node("BasicScheduler", model=model, scheduler="simple", steps=3, denoise=1.0)
    noise = g.node("RandomNoise", noise_seed=seed)
    sampler = g.node("UltraRes_PixelsmithSampler", slider=2, patch_size=128, band=16, mode=mode, patch_batch=0,
                     crop_conditioning="fixed", state_device="auto", positions=positions)
    sca = g.node("SamplerCustomAdvanced", noise=noise.out(0), guider=guider.out(0), sampler=sampler.out(0),
                 sigmas=sigmas.out(0), latent_image=latent.out(0))
    g.node("UltraResTest_RecordLatent", samples=sca.out(0), tag=tag)
    return g.finalize()


def shifts(records, tag):
    """(shift_y, shift_x) in latent cells (token shift × the 2×2 patch) of each model call of ``tag``."""
    return [(r["rope_options"]["shift_y"] * 2, r["rope_options"]["shift_x"] * 2) for r in records if r["tag"] == tag]


@pytest.mark.parametrize("mode", ["faithful", "fast"])
def test_global_positions_shift_each_patch_to_its_place(host, rec, probe_records, mode):
    host.run(flux_graph("local", mode, tag="local"))
    assert all(r["rope_options"] is None for r in probe_records if r["tag"] == "local")
    host.run(flux_graph("global", mode, tag="global"))
    calls = [r for r in probe_records if r["tag"] == "global"]
    # One patch per call (a call carries one RoPE shift), each patch's offset inside the 16×32 latent.
    assert calls and all(r["shape"] == (2, 16, 16, 16) for r in calls)
    offsets = shifts(probe_records, "global")
    assert all(y == 0 and 0 <= x <= 16 and float(x).is_integer() for y, x in offsets)  # latent 16 × 32
    columns = {x for _, x in offsets}
    assert columns >= {0.0, 16.0} and len(columns) > 2  # both ends and shifted windows between
    local, moved = rec.LATENTS["local"], rec.LATENTS["global"]
    assert torch.isfinite(moved).all() and (moved - local).abs().mean() > 1e-4, "positions reach the model"


def test_global_positions_compose_with_the_models_own_rope_options(host, rec, probe_records):
    """A RoPE scale/shift already on the model is kept: the patch offset is added in its scaled units,
    and the model's own options are left as they were."""
    host.run(flux_graph("global", tag="user", user_rope=(0.5, 3.0)))
    for r in (r for r in probe_records if r["tag"] == "user"):
        rope = r["rope_options"]
        assert rope["scale_x"] == rope["scale_y"] == 0.5
        assert (rope["shift_x"] - 3.0) / 0.5 * 2 in {float(v) for v in range(17)}
    rope_mod = host.module_of("UltraResTest_RopeOptions")
    assert rope_mod.LAST_MODEL[0].model_options["transformer_options"]["rope_options"]["shift_x"] == 3.0


def test_global_positions_are_refused_on_a_unet(host):
    from comfy_execution.graph_utils import GraphBuilder

    g = GraphBuilder(prefix="")
    ckpt = g.node("UltraResTest_TinyCheckpoint", kind="sdxl", seed=0)
    pos = g.node("CLIPTextEncode", clip=ckpt.out(1), text="a castle").out(0)
    guider = g.node("CFGGuider", model=ckpt.out(0), positive=pos, negative=pos, cfg=3.0)
    sigmas = g.node("BasicScheduler", model=ckpt.out(0), scheduler="simple", steps=2, denoise=1.0)
    sampler = g.node("UltraRes_PixelsmithSampler", slider=1, patch_size=128, band=16, mode="faithful",
                     patch_batch=0, crop_conditioning="fixed", state_device="auto", positions="global")
    latent = g.node("UltraResTest_SeededLatent", width=256, height=128, batch=1, seed=0)
    sca = g.node("SamplerCustomAdvanced", noise=g.node("RandomNoise", noise_seed=1).out(0), guider=guider.out(0),
                 sampler=sampler.out(0), sigmas=sigmas.out(0), latent_image=latent.out(0))
    g.node("UltraResTest_RecordLatent", samples=sca.out(0), tag="unet")
    with pytest.raises(WorkflowError, match=r"positions: 'global' .*UNetModel.*Use 'local'"):
        host.run(g.finalize())


def test_reference_latents_are_refused_by_name(host, rec):
    with pytest.raises(WorkflowError, match=r"positive conditioning carries reference latents"):
        host.run(flux_graph(reference=True, tag="ref"))
