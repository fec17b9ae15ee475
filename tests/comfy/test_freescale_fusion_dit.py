"""FreeScale Scale Fusion on a Flux-class DiT's joint attention (tiny Flux, real sampler, CPU)."""
from __future__ import annotations

import logging

import pytest
import torch

from harness.comfy_host import WorkflowError
from harness.records import cleared_records


@pytest.fixture
def rec(host):
    yield from cleared_records(host, "UltraResTest_SeededLatent", "LATENTS")


def fusion_graph(width, height, tag, fusion=True, jitter_seed=0, fast_mode=False, reference=False):
    """Tiny Flux (→ Scale Fusion) → CFGGuider → one Euler step on an empty latent → RecordLatent(tag)."""
    from comfy_execution.graph_utils import GraphBuilder

    g = GraphBuilder(prefix="")
    flux = g.node("UltraResTest_TinyFlux", seed=0)
    model = flux.out(0)
    if fusion:
        model = g.node("UltraRes_FreeScaleScaleFusion", model=model, fast_mode=fast_mode, start_percent=0.0,
                       end_percent=1.0, jitter_seed=jitter_seed, jitter=True).out(0)
    latent = g.node("EmptySD3LatentImage", width=width, height=height, batch_size=1)
    pos = flux.out(1)
    if reference:
        small = g.node("EmptySD3LatentImage", width=64, height=64, batch_size=1)
        pos = g.node("ReferenceLatent", conditioning=pos, latent=small.out(0)).out(0)
    guider = g.node("CFGGuider", model=model, positive=pos, negative=flux.out(2), cfg=3.0)
    sigmas = g.node("BasicScheduler", model=model, scheduler="simple", steps=1, denoise=1.0)
    sampler = g.node("KSamplerSelect", sampler_name="euler")
    sca = g.node("SamplerCustomAdvanced", noise=g.node("RandomNoise", noise_seed=3).out(0), guider=guider.out(0),
                 sampler=sampler.out(0), sigmas=sigmas.out(0), latent_image=latent.out(0))
    g.node("UltraResTest_RecordLatent", samples=sca.out(0), tag=tag)
    return g.finalize()


def render(host, rec, *args, **kwargs):
    host.reset_cache()
    host.run(fusion_graph(*args, **kwargs))
    return rec[args[2]]


def test_native_size_is_plain_attention(host, rec):
    """At the native 1024 px one window spans the map: the fused model is the plain model, exactly."""
    assert torch.equal(render(host, rec, 1024, 512, "fused"), render(host, rec, 1024, 512, "plain", fusion=False))


@pytest.mark.parametrize("fast_mode", [False, True])
def test_fusion_changes_a_2048_wide_picture_and_is_seeded(host, rec, fast_mode):
    plain = render(host, rec, 2048, 1024, "plain", fusion=False)
    fused = render(host, rec, 2048, 1024, "fused", fast_mode=fast_mode)
    again = render(host, rec, 2048, 1024, "again", fast_mode=fast_mode)
    other = render(host, rec, 2048, 1024, "other", jitter_seed=1, fast_mode=fast_mode)
    assert fused.shape == (1, 16, 128, 256) and torch.isfinite(fused).all()
    assert (fused - plain).abs().mean() > 1e-3, "the windows reach the image tokens"
    assert torch.equal(fused, again), "the same jitter seed reproduces"
    assert not torch.equal(fused, other), "the jitter seed moves the windows"


def test_the_input_model_is_left_as_it_was(host):
    flux = host.module_of("UltraResTest_TinyFlux").tiny_flux(0)
    wrappers = dict(flux.wrappers)
    fused = host.node_classes["UltraRes_FreeScaleScaleFusion"].execute(
        flux, fast_mode=False, start_percent=0.0, end_percent=1.0, jitter_seed=0, jitter=True).result[0]
    assert fused is not flux and flux.wrappers == wrappers
    assert "ultrares_scale_fusion" in str(fused.wrappers)


def test_reference_latents_are_refused(host, rec):
    with pytest.raises(WorkflowError, match=r"Scale Fusion: this model call attends over .*reference latents"):
        render(host, rec, 2048, 1024, "ref", reference=True)


def test_a_model_without_attention_to_fuse_is_refused_by_name(host):
    stage_c = host.module_of("UltraResTest_TinyCheckpoint").tiny_models.tiny_cascade("c", 0)
    with pytest.raises(ValueError, match=r"^model: FreeScale Scale Fusion needs .*Flux / Flux.2, Qwen-Image.*StageC"):
        host.node_classes["UltraRes_FreeScaleScaleFusion"].execute(
            stage_c, fast_mode=False, start_percent=0.0, end_percent=1.0, jitter_seed=0, jitter=True)


def upscale_graph(tag, seed=0, dilation=True, freeu=True, keep_detail=False):
    """Tiny Flux + 16-channel tiny VAE: a 64 px base latent → FreeScale Upscale to 128 px (two windows a side)."""
    from comfy_execution.graph_utils import GraphBuilder

    g = GraphBuilder(prefix="")
    flux = g.node("UltraResTest_TinyFlux", seed=0)
    vae = g.node("UltraResTest_TinyVAE", channels="16", seed=0)
    base = g.node("UltraResTest_SeededLatent", width=64, height=64, batch=1, seed=2, channels=16)
    up = g.node("UltraRes_FreeScaleUpscale", model=flux.out(0), vae=vae.out(0), positive=flux.out(1),
                negative=flux.out(2), latent=base.out(0), resolutions="128", seed=seed, steps=4, cfg=3.0,
                cosine_scale=2.0, cosine_scale_bg=1.0, fast_mode=False, dilation=dilation, freeu=freeu,
                keep_detail=keep_detail)
    g.node("UltraResTest_RecordLatent", samples=up.out(0), tag=tag)
    return g.finalize()


def test_freescale_upscale_runs_on_a_dit_seeded_without_unet_only_parts(host, rec, caplog):
    host.reset_cache()
    with caplog.at_level(logging.INFO):
        host.run(upscale_graph("a"))
    host.reset_cache()
    host.run(upscale_graph("b", dilation=False, freeu=False))
    host.reset_cache()
    host.run(upscale_graph("c", seed=1))
    a, b, c = rec["a"], rec["b"], rec["c"]
    assert a.shape == (1, 16, 16, 16) and torch.isfinite(a).all()
    assert torch.equal(a, b), "dilation and FreeU are skipped on a DiT"
    assert not torch.equal(a, c), "the seed changes the stage noise and the windows"
    assert "has neither, so they are skipped" in caplog.text
