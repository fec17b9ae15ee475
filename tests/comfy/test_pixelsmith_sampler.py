"""Pixelsmith SAMPLER and Pixelsmith Upscale on the real host (tiny SDXL / SD1.5, CPU)."""
from __future__ import annotations

import pytest
import torch

from harness.comfy_host import WorkflowError
from harness.records import cleared_records


@pytest.fixture
def rec(host):
    """``LATENTS``, ``SOURCES`` and ``CALLS`` recorded by the Pixelsmith test fixtures (cleared)."""
    yield from cleared_records(host, "UltraResTest_SeededLatent", "LATENTS", "SOURCES", "CALLS")


def seeded_latent(width, height, batch=1, seed=0):
    """What UltraResTest_SeededLatent returns (recomputed: that node may be cached)."""
    return torch.randn(batch, 4, height // 8, width // 8, generator=torch.Generator().manual_seed(seed))


def sampler_graph(kind="sdxl", width=256, height=128, batch=1, steps=3, slider=2, mode="faithful",
                  patch_size=128, patch_batch=0, seed=1, latent_seed=0, interrupt_after=0,
                  crop="fixed", area=False, control=False):
    """Tiny checkpoint → CFGGuider + BasicScheduler(ddim_uniform) + RandomNoise + Pixelsmith SAMPLER
    → SamplerCustomAdvanced on a seeded latent → RecordLatent("out") and VAE decode → SaveImage."""
    from comfy_execution.graph_utils import GraphBuilder

    g = GraphBuilder(prefix="")
    ckpt = g.node("UltraResTest_TinyCheckpoint", kind=kind, seed=0)
    model = g.node("UltraResTest_InterruptAfter", model=ckpt.out(0), calls=interrupt_after).out(0)
    pos = g.node("CLIPTextEncode", clip=ckpt.out(1), text="a castle on a hill, detailed").out(0)
    neg = g.node("CLIPTextEncode", clip=ckpt.out(1), text="blurry").out(0)
    if control:
        hint_latent = g.node("UltraResTest_SeededLatent", width=width, height=height, batch=1, seed=9)
        hint = g.node("VAEDecode", samples=hint_latent.out(0), vae=ckpt.out(2))
        cn = g.node("UltraResTest_TinyControlNet", seed=0)
        applied = g.node("ControlNetApplyAdvanced", positive=pos, negative=neg, control_net=cn.out(0),
                         image=hint.out(0), strength=1.0, start_percent=0.0, end_percent=1.0)
        pos, neg = applied.out(0), applied.out(1)
    if area:
        pos = g.node("ConditioningSetArea", conditioning=pos, width=64, height=64, x=0, y=0, strength=1.0).out(0)
    guider = g.node("CFGGuider", model=model, positive=pos, negative=neg, cfg=5.0)
    sigmas = g.node("BasicScheduler", model=model, scheduler="ddim_uniform", steps=steps, denoise=1.0)
    noise = g.node("RandomNoise", noise_seed=seed)
    sampler = g.node("UltraRes_PixelsmithSampler", slider=slider, patch_size=patch_size, band=16, mode=mode,
                     patch_batch=patch_batch, crop_conditioning=crop, state_device="auto")
    latent = g.node("UltraResTest_SeededLatent", width=width, height=height, batch=batch, seed=latent_seed)
    sca = g.node("SamplerCustomAdvanced", noise=noise.out(0), guider=guider.out(0), sampler=sampler.out(0),
                 sigmas=sigmas.out(0), latent_image=latent.out(0))
    g.node("UltraResTest_RecordLatent", samples=sca.out(0), tag="out")
    dec = g.node("VAEDecode", samples=sca.out(0), vae=ckpt.out(2))
    save = g.node("SaveImage", images=dec.out(0), filename_prefix="pixelsmith_test")
    return g.finalize(), save.id


@pytest.mark.parametrize("kind", ["sdxl", "sd15"])
def test_sampler_graph_runs_patchwise(host, rec, kind):
    graph, save_id = sampler_graph(kind=kind, steps=2)
    img = host.saved_images(host.run(graph), save_id)[0]
    out = rec.LATENTS["out"]
    z_up = seeded_latent(256, 128)
    assert img.shape == (128, 256, 3)
    assert out.shape == z_up.shape == (1, 4, 16, 32) and torch.isfinite(out).all()
    assert not torch.allclose(out, z_up, atol=1e-3), "the sampler must change the latent"
    # Every model call sees one 16×16 patch, cond and uncond batched (faithful: 1 patch per call).
    shapes = {s for s, *_ in rec.CALLS}
    assert shapes == {(2, 4, 16, 16)}
    # Rounds: the sigma of successive calls never increases and covers both steps; a 16×32
    # latent needs at least 2 patches per step.
    sig = [c[1] for c in rec.CALLS]
    assert sig == sorted(sig, reverse=True) and len(set(sig)) == 2
    assert all(sig.count(s) >= 2 for s in set(sig))


def test_single_patch_runs_one_call_per_step(host, rec):
    """A latent no larger than the patch is a plain full-latent sampler: exactly N calls."""
    graph, _ = sampler_graph(width=128, height=128, patch_size=128, steps=4)
    host.run(graph)
    assert len(rec.CALLS) == 4 and {s for s, *_ in rec.CALLS} == {(2, 4, 16, 16)}


def test_same_seed_same_output_and_seed_matters(host, rec):
    graph, _ = sampler_graph(seed=7, steps=2)
    host.run(graph)
    first = rec.LATENTS.pop("out")
    # Same inputs, but a never-firing interrupter instead of none: the sampler re-executes.
    again, _ = sampler_graph(seed=7, steps=2, interrupt_after=10**6)
    host.run(again)
    assert torch.equal(first, rec.LATENTS.pop("out")), "same seed must reproduce exactly"
    other, _ = sampler_graph(seed=8, steps=2)
    host.run(other)
    assert not torch.equal(first, rec.LATENTS["out"])


def test_interrupt_stops_within_one_patch_and_leaves_input(host, rec):
    graph, _ = sampler_graph(steps=3, interrupt_after=3, latent_seed=11)
    with pytest.raises(InterruptedError):
        host.run(graph)
    assert len(rec.CALLS) == 3, "no model call may start after the interrupt request"
    assert "out" not in rec.LATENTS
    src, copy = rec.SOURCES[0]
    assert torch.equal(src, copy), "the input LATENT tensor must be untouched"


def test_fast_mode_batches_patches_and_guidance_pulls_to_input(host, rec):
    graph, _ = sampler_graph(width=256, height=256, patch_size=64, mode="fast", patch_batch=4,
                             steps=2, slider=2)
    host.run(graph)
    batch_sizes = [s[0] for s, *_ in rec.CALLS]
    assert max(batch_sizes) == 8, "fast mode: 4 patches × (cond, uncond) per call"
    guided = rec.LATENTS["out"]
    z_up = seeded_latent(256, 256)
    graph, _ = sampler_graph(width=256, height=256, patch_size=64, mode="fast", patch_batch=4,
                             steps=2, slider=0)
    host.run(graph)
    free = rec.LATENTS["out"]
    err_guided = (guided - z_up).pow(2).mean()
    err_free = (free - z_up).pow(2).mean()
    assert err_guided < err_free, "the Slider must pull the result toward the guidance latent"


def test_sdxl_crop_conditioning_per_patch(host, rec):
    graph, _ = sampler_graph(kind="sdxl", steps=1, crop="fixed")
    host.run(graph)
    fixed = [c[2] for c in rec.CALLS]
    rec.CALLS.clear()
    graph, _ = sampler_graph(kind="sdxl", steps=1, crop="zero")
    host.run(graph)
    zero = [c[2] for c in rec.CALLS]
    d = fixed[0].shape[1]
    crops_fixed = {tuple(y[0, d - 1024:d - 512].round(decimals=4).tolist()) for y in fixed}
    crops_zero = {tuple(y[0, d - 1024:d - 512].round(decimals=4).tolist()) for y in zero}
    assert len(fixed) >= 2 and len(crops_fixed) >= 2, "patches at different places get different crops"
    assert len(crops_zero) == 1
    # Everything except the crop fields is the same per patch.
    assert all(torch.equal(y[:, :d - 1024], fixed[0][:, :d - 1024]) for y in fixed)
    assert all(torch.equal(y[:, d - 512:], fixed[0][:, d - 512:]) for y in fixed)


def test_sd15_has_no_adm(host, rec):
    graph, _ = sampler_graph(kind="sd15", steps=1, crop="fixed", latent_seed=3)
    host.run(graph)
    assert rec.CALLS and all(c[2] is None for c in rec.CALLS)


def test_batch_of_two(host, rec):
    graph, _ = sampler_graph(batch=2, steps=2)
    host.run(graph)
    out = rec.LATENTS["out"]
    assert out.shape == (2, 4, 16, 32)
    assert {s for s, *_ in rec.CALLS} == {(4, 4, 16, 16)}
    assert not torch.allclose(out[0], out[1])


def test_regional_conditioning_is_refused_clearly(host, rec):
    graph, _ = sampler_graph(steps=1, area=True)
    with pytest.raises(WorkflowError, match="area or mask"):
        host.run(graph)


def upscale_graph(kind="sdxl", via="latent", scale=2.0, target_width=0, slider=2, steps=2, mode="faithful", **extra):
    from comfy_execution.graph_utils import GraphBuilder

    g = GraphBuilder(prefix="")
    ckpt = g.node("UltraResTest_TinyCheckpoint", kind=kind, seed=0)
    pos = g.node("CLIPTextEncode", clip=ckpt.out(1), text="a castle on a hill, detailed")
    neg = g.node("CLIPTextEncode", clip=ckpt.out(1), text="blurry")
    empty = g.node("EmptyLatentImage", width=64, height=64, batch_size=1)
    base = g.node("KSampler", model=ckpt.out(0), positive=pos.out(0), negative=neg.out(0),
                  latent_image=empty.out(0), seed=3, steps=2, cfg=7.5, sampler_name="ddim",
                  scheduler="ddim_uniform", denoise=1.0)
    src = {"latent": base.out(0)}
    if via == "image":
        src = {"image": g.node("VAEDecode", samples=base.out(0), vae=ckpt.out(2)).out(0)}
    up = g.node("UltraRes_PixelsmithUpscale", model=ckpt.out(0), vae=ckpt.out(2), positive=pos.out(0),
                negative=neg.out(0), **src, scale_by=scale, target_width=target_width, target_height=0,
                seed=5, steps=steps, cfg=7.5, slider=slider, patch_size=64, band=16, mode=mode,
                patch_batch=0, crop_conditioning="fixed", state_device="auto", decode_image=True, **extra)
    g.node("UltraResTest_RecordLatent", samples=up.out(0), tag="up")
    save = g.node("SaveImage", images=up.out(1), filename_prefix="pixelsmith_up")
    return g.finalize(), save.id


@pytest.mark.parametrize("kind,via", [("sdxl", "latent"), ("sd15", "image")])
def test_upscale_node_runs(host, rec, kind, via):
    graph, save_id = upscale_graph(kind=kind, via=via)
    img = host.saved_images(host.run(graph), save_id)[0]
    assert img.shape == (128, 128, 3)
    assert rec.LATENTS["up"].shape == (1, 4, 16, 16)


@pytest.mark.parametrize("via", ["latent", "image"])
def test_upscale_keep_detail_is_opt_in_and_seeded(host, rec, via):
    results = {}
    for name, extra in (("default", {}), ("off", {"keep_detail": False}), ("on", {"keep_detail": True}),
                        ("on again", {"keep_detail": True})):
        host.run(upscale_graph(via=via, **extra)[0])
        results[name] = rec.LATENTS["up"].clone()
    assert torch.equal(results["default"], results["off"]), "off is the paper's stage, as before"
    assert torch.equal(results["on"], results["on again"])
    assert (results["on"] - results["off"]).abs().mean() > 1e-3


def test_upscale_target_width_keeps_aspect_and_needs_one_source(host, rec):
    graph, save_id = upscale_graph(target_width=96, mode="fast")
    img = host.saved_images(host.run(graph), save_id)[0]
    assert img.shape == (96, 96, 3)
    graph, _ = upscale_graph()
    up = next(k for k, v in graph.items() if v["class_type"] == "UltraRes_PixelsmithUpscale")
    del graph[up]["inputs"]["latent"]
    with pytest.raises(WorkflowError, match="exactly one"):
        host.run(graph)


def flux_graph(slider, seed=1, steps=3):
    """Tiny Flux-class model (rectified flow, 16 channels, 2×2 patches) through the same graph."""
    from comfy_execution.graph_utils import GraphBuilder

    g = GraphBuilder(prefix="")
    flux = g.node("UltraResTest_TinyFlux", seed=0)
    model = g.node("UltraResTest_InterruptAfter", model=flux.out(0), calls=0).out(0)
    guider = g.node("CFGGuider", model=model, positive=flux.out(1), negative=flux.out(2), cfg=3.0)
    sigmas = g.node("BasicScheduler", model=model, scheduler="simple", steps=steps, denoise=1.0)
    noise = g.node("RandomNoise", noise_seed=seed)
    sampler = g.node("UltraRes_PixelsmithSampler", slider=slider, patch_size=128, band=16, mode="faithful",
                     patch_batch=0, crop_conditioning="fixed", state_device="auto")
    latent = g.node("UltraResTest_SeededLatent", width=256, height=128, batch=1, seed=5, channels=16)
    sca = g.node("SamplerCustomAdvanced", noise=noise.out(0), guider=guider.out(0), sampler=sampler.out(0),
                 sigmas=sigmas.out(0), latent_image=latent.out(0))
    g.node("UltraResTest_RecordLatent", samples=sca.out(0), tag=f"flux{slider}")
    return g.finalize()


def test_flux_class_model_runs_with_flow_guidance(host, rec):
    host.run(flux_graph(slider=3))
    guided = rec.LATENTS["flux3"]
    assert guided.shape == (1, 16, 16, 32) and torch.isfinite(guided).all()
    assert {s for s, *_ in rec.CALLS} == {(2, 16, 16, 16)}
    sig = [c[1] for c in rec.CALLS]
    assert sig == sorted(sig, reverse=True) and max(sig) <= 1.0
    host.run(flux_graph(slider=0))
    free = rec.LATENTS["flux0"]
    z_up = torch.randn(1, 16, 16, 32, generator=torch.Generator().manual_seed(5))
    # Guidance G = (1-σ)·z + σ·n pulls toward z_up (in the model's latent space, i.e. after
    # Flux's process_latent_in; compare relative to the unguided run).
    import comfy.latent_formats
    fmt = comfy.latent_formats.Flux()
    target = fmt.process_out(fmt.process_in(z_up))
    assert (guided - target).pow(2).mean() < (free - target).pow(2).mean()


def test_controlnet_hint_is_sliced_per_patch(host, rec):
    mod = host.module_of("UltraRes_PixelsmithSampler")
    cn_mod = host.module_of("UltraResTest_TinyControlNet")
    H, W = 16, 32  # latent px; hints are in image px (× 8)
    hint = torch.arange(3 * H * 8 * W * 8, dtype=torch.float32).reshape(1, 3, H * 8, W * 8) / (3 * H * W * 64)
    first, second = cn_mod.tiny_controlnet(0), cn_mod.tiny_controlnet(1)
    first.set_cond_hint(hint)
    second.set_cond_hint(hint.flip(-1))
    second.set_previous_controlnet(first)
    pc = mod.PatchConditioning({"positive": [{"control": second, "model_conds": {}}]}, None, (H, W), 2, "zero")
    boxes = [mod.pixelsmith.PatchBox(0, 16, 16, 16), mod.pixelsmith.PatchBox(0, 3, 16, 16)]
    sliced = pc.for_boxes(boxes)["positive"][0]["control"]

    def expected(h):
        return torch.cat([h[..., :, 128:256]] * 2 + [h[..., :, 24:152]] * 2)  # patch-major, B = 2
    assert torch.equal(sliced.cond_hint_original, expected(hint.flip(-1)))
    assert torch.equal(sliced.previous_controlnet.cond_hint_original, expected(hint))
    assert second.cond_hint_original is not sliced.cond_hint_original, "the original is untouched"
    assert sliced.control_model is second.control_model


def test_controlnet_graph_runs_and_changes_the_result(host, rec):
    graph, _ = sampler_graph(kind="sd15", steps=2, control=True, latent_seed=21)
    host.run(graph)
    with_cn = rec.LATENTS.pop("out")
    graph, _ = sampler_graph(kind="sd15", steps=2, control=False, latent_seed=21)
    host.run(graph)
    assert not torch.allclose(with_cn, rec.LATENTS["out"], atol=1e-4)


def test_auto_slider_is_the_papers_share_of_the_steps(host, rec):
    """slider -1 on a 5-step ×2 stage (16² latent, patch 8: at most 2× the patch) guides
    round(0.4·5) = 2 steps: bit-identical to slider 2, unlike slider 3."""
    out = {}
    for slider in (-1, 2, 3):
        host.run(upscale_graph(slider=slider, steps=5)[0])
        out[slider] = rec.LATENTS["up"].clone()
    assert torch.equal(out[-1], out[2]) and not torch.equal(out[-1], out[3])
