"""Pixelsmith SAMPLER on tiny DiTs of four more ComfyUI model classes (Flux.2, Qwen-Image, Z-Image, SD3)."""
from __future__ import annotations

import pytest
import torch

from harness.comfy_host import WorkflowError
from harness.records import cleared_records

KINDS = ["flux2", "qwen_image", "lumina2", "sd3"]
CHANNELS = {"flux2": 128, "qwen_image": 16, "lumina2": 16, "sd3": 16}
W, H = 32, 16  # latent cells; UltraResTest_SeededLatent takes px = cells × 8, whatever the model
# What each model call gets besides x and sigma: (text context shape, cond names). Flux.2 pads its
# text to 512 tokens and is guidance-distilled; SD3 gets the pooled vector as y; Z-Image the token count.
MODEL_CONDS = {"flux2": ((2, 512, 32), ["guidance"]), "qwen_image": ((2, 8, 32), []),
               "lumina2": ((2, 8, 32), ["num_tokens"]), "sd3": ((2, 8, 32), ["y"])}


@pytest.fixture
def rec(host):
    """``LATENTS`` recorded by the Pixelsmith test fixtures (cleared)."""
    yield from cleared_records(host, "UltraResTest_SeededLatent", "LATENTS", "SOURCES")


@pytest.fixture
def calls(host):
    """The tiny DiT's model calls: input shape, sigma, cond names (cleared)."""
    yield from cleared_records(host, "UltraResTest_TinyDiT", "CALLS")


def dit_graph(kind, seed=1, steps=3, slider=2, tag="out"):
    """Tiny DiT → CFGGuider + BasicScheduler + RandomNoise + Pixelsmith SAMPLER (16² patches)
    → SamplerCustomAdvanced on a seeded 32×16 latent → RecordLatent(tag)."""
    from comfy_execution.graph_utils import GraphBuilder

    g = GraphBuilder(prefix="")
    dit = g.node("UltraResTest_TinyDiT", kind=kind, seed=0)
    model = dit.out(0)
    guider = g.node("CFGGuider", model=model, positive=dit.out(1), negative=dit.out(2), cfg=3.0)
    sigmas = g.node("BasicScheduler", model=model, scheduler="simple", steps=steps, denoise=1.0)
    noise = g.node("RandomNoise", noise_seed=seed)
    px = 16 if kind == "flux2" else 8  # image px per latent cell
    sampler = g.node("UltraRes_PixelsmithSampler", slider=slider, patch_size=16 * px, band=2 * px, mode="faithful",
                     patch_batch=0, crop_conditioning="fixed", state_device="auto")
    latent = g.node("UltraResTest_SeededLatent", width=W * 8, height=H * 8, batch=1, seed=5,
                    channels=CHANNELS[kind])
    sca = g.node("SamplerCustomAdvanced", noise=noise.out(0), guider=guider.out(0), sampler=sampler.out(0),
                 sigmas=sigmas.out(0), latent_image=latent.out(0))
    g.node("UltraResTest_RecordLatent", samples=sca.out(0), tag=tag)
    return g.finalize()


def sample(host, rec, calls, kind, seed):
    """The sampled latent of ``dit_graph(kind, seed)``, computed afresh (no cached node outputs)."""
    host.reset_cache()
    rec.LATENTS.clear()
    calls.clear()
    host.run(dit_graph(kind, seed=seed))
    return rec.LATENTS["out"]


@pytest.mark.parametrize("kind", KINDS)
def test_sampler_runs_patchwise_and_is_seeded(host, rec, calls, kind):
    out = sample(host, rec, calls, kind, seed=1)
    z_up = torch.randn(1, CHANNELS[kind], H, W, generator=torch.Generator().manual_seed(5))
    # ComfyUI's SamplerCustomAdvanced gives a 3-D latent format's model (Qwen-Image: Wan21) (B, C, 1, H, W).
    shape = (1, CHANNELS[kind], 1, H, W) if kind == "qwen_image" else (1, CHANNELS[kind], H, W)
    assert out.shape == shape and torch.isfinite(out).all()
    assert not torch.allclose(out.reshape(z_up.shape), z_up, atol=1e-3), "the sampler must change the latent"
    # Every model call sees 16×16 patches (cond and uncond batched, one patch per call), and the
    # sigmas of successive calls never increase.
    assert {c["shape"][0] for c in calls} == {2}
    assert {c["shape"][-2:] for c in calls} == {(16, 16)}
    sig = [c["sigma"] for c in calls]
    assert sig == sorted(sig, reverse=True) and len(set(sig)) == 3
    assert {(c["context"], tuple(c["conds"])) for c in calls} == {(MODEL_CONDS[kind][0], tuple(MODEL_CONDS[kind][1]))}
    assert torch.equal(sample(host, rec, calls, kind, seed=1), out), "the same seed must give the same latent"
    other = sample(host, rec, calls, kind, seed=2)
    assert torch.isfinite(other).all() and not torch.equal(other, out), "another noise seed, another latent"


def test_model_latent_px_follows_the_model_class(host):
    stage = host.module_of("UltraRes_PixelsmithUpscale").stage
    dits = host.module_of("UltraResTest_TinyDiT")
    for kind in KINDS:
        model = dits.tiny_dit(kind)
        assert model.model.latent_format.latent_channels == CHANNELS[kind], kind
        assert stage.model_latent_px(model.model) == (16 if kind == "flux2" else 8), kind
        assert stage.model_latent_px(model) == stage.model_latent_px(model.model), kind


# Scale Fusion sizes in image px: two windows across (the width's scale number is W // 1024). Z-Image's
# is off its 32-token pad grid (137 × 63 tokens + 9 pad tokens), so the picture's pad tail is exercised.
FUSION_PX = {"flux2": (2048, 1024), "qwen_image": (2048, 1024), "lumina2": (2192, 1000), "sd3": (2048, 1024)}


def fusion_graph(kind, jitter_seed=0, fusion=True, tag="fused", size=None):
    """Tiny DiT (→ Scale Fusion) → one Euler step at FUSION_PX[kind] image px → RecordLatent(tag)."""
    from comfy_execution.graph_utils import GraphBuilder

    g = GraphBuilder(prefix="")
    dit = g.node("UltraResTest_TinyDiT", kind=kind, seed=0)
    model = dit.out(0)
    if fusion:
        model = g.node("UltraRes_FreeScaleScaleFusion", model=model, fast_mode=False, start_percent=0.0,
                       end_percent=1.0, jitter_seed=jitter_seed, jitter=True).out(0)
    cells = 16 if kind == "flux2" else 8  # image px per latent cell
    width, height = size or FUSION_PX[kind]
    latent = g.node("UltraResTest_SeededLatent", width=width * 8 // cells, height=height * 8 // cells, batch=1,
                    seed=5, channels=CHANNELS[kind])
    guider = g.node("CFGGuider", model=model, positive=dit.out(1), negative=dit.out(2), cfg=3.0)
    sigmas = g.node("BasicScheduler", model=model, scheduler="simple", steps=1, denoise=1.0)
    sca = g.node("SamplerCustomAdvanced", noise=g.node("RandomNoise", noise_seed=3).out(0), guider=guider.out(0),
                 sampler=g.node("KSamplerSelect", sampler_name="euler").out(0), sigmas=sigmas.out(0),
                 latent_image=latent.out(0))
    g.node("UltraResTest_RecordLatent", samples=sca.out(0), tag=tag)
    return g.finalize()


def fused(host, rec, kind, **kwargs):
    host.reset_cache()
    host.run(fusion_graph(kind, **kwargs))
    return rec.LATENTS[kwargs.get("tag", "fused")]


@pytest.mark.parametrize("kind", KINDS)
def test_scale_fusion_runs_on_joint_attention_and_is_seeded(host, rec, kind):
    plain = fused(host, rec, kind, fusion=False, tag="plain")
    first, again = fused(host, rec, kind), fused(host, rec, kind)
    other = fused(host, rec, kind, jitter_seed=1)
    assert torch.isfinite(first).all() and first.shape == plain.shape
    assert (first - plain).abs().mean() > 1e-4, "the windows reach the image tokens"
    assert torch.equal(first, again) and not torch.equal(first, other)


@pytest.mark.parametrize("kind", KINDS)
def test_scale_fusion_at_the_native_size_is_plain_attention(host, rec, kind):
    """One window spans a native-size picture, so every layout (Z-Image's pad tokens moved in front of
    the grid and back) must give the plain model's result."""
    size = (1000, 488) if kind == "lumina2" else (1024, 512)
    plain = fused(host, rec, kind, fusion=False, tag="plain", size=size)
    # fp32 rounding only: the fused path sums the same attention in another order (one element of a latent
    # of spread ~1 came out 1.4e-5 off in one run); pad tokens left out of place move it by up to 8.
    torch.testing.assert_close(fused(host, rec, kind, size=size), plain, rtol=1e-4, atol=1e-4)


def test_scale_fusion_moves_z_image_pad_tokens_out_of_the_grid(host):
    """The windows of a padded Z-Image sequence are those of the same tokens with the pads in the prompt."""
    dit_module = host.module_of("UltraRes_FreeScaleScaleFusion").freescale_fusion_dit
    config = dict(sigma_start=1.0, sigma_end=0.0, fast_mode=False, seed=0, jitter=True, base_px=1024, latent_px=8,
                  token_side=2)
    text, h, w, tail = 8, 63, 129, 1  # tokens: 8 prompt + 24 prompt pads, the grid, 1 picture pad
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 32 + h * w + tail, 4, generator=g) for _ in range(3))

    def attention(q_, k_, v_, heads, *rest, **kw):
        return torch.nn.functional.scaled_dot_product_attention(q_, k_, v_).transpose(1, 2).flatten(2)

    padded = dit_module.JointFusion(**config, pad_multiple=32).override((126, 258), text, 1.0, None)
    out = padded(attention, q, k, v, 2, None, skip_reshape=True)
    grid = slice(32, 32 + h * w)
    moved = [torch.cat([t[:, :, :32], t[:, :, grid.stop:], t[:, :, grid]], dim=2) for t in (q, k, v)]
    plain = dit_module.JointFusion(**config).override((126, 258), 32 + tail, 1.0, None)
    expected = plain(attention, *moved, 2, None, skip_reshape=True)
    torch.testing.assert_close(out[:, grid], expected[:, 32 + tail:])
    torch.testing.assert_close(out[:, 32 + h * w:], expected[:, 32:32 + tail])


def test_scale_fusion_names_sd3s_position_table_limit(host, rec):
    with pytest.raises(WorkflowError, match=r"SD3 / SD3.5: the model's learned position table covers 2048 px a side, "
                                            r"and 4096 x 1024 px is larger"):
        fused(host, rec, "sd3", size=(4096, 1024))


@pytest.mark.parametrize("kind", KINDS)
def test_global_positions_where_comfyui_can_shift_them(host, rec, calls, kind):
    """Flux.2 and Z-Image read rope_options: global positions change the result and leave the input
    model as it was; Qwen-Image and SD3 cannot shift their positions and refuse it by name."""
    graph = dit_graph(kind, tag="global")
    sampler = next(n for n in graph.values() if n["class_type"] == "UltraRes_PixelsmithSampler")
    sampler["inputs"]["positions"] = "global"
    model = host.module_of("UltraResTest_TinyDiT").tiny_dit(kind)
    options = repr(model.model_options)
    host.reset_cache()
    if kind in ("qwen_image", "sd3"):
        with pytest.raises(WorkflowError, match=r"positions: 'global' .* Use 'local'"):
            host.run(graph)
        return
    host.run(graph)
    moved = rec.LATENTS["global"]
    local = sample(host, rec, calls, kind, seed=1)
    assert torch.isfinite(moved).all() and not torch.equal(moved, local)
    assert repr(model.model_options) == options


@pytest.mark.parametrize("kind", KINDS)
def test_sampler_stops_at_an_interrupt(host, calls, kind):
    import comfy.model_management

    graph = dit_graph(kind, tag="interrupted")
    dit = next(n for n in graph.values() if n["class_type"] == "UltraResTest_TinyDiT")
    dit["inputs"]["interrupt_after"] = 2
    host.reset_cache()
    try:
        with pytest.raises(InterruptedError):
            host.run(graph)
        assert len(calls) == 2, "no model call after the interrupt"
    finally:
        comfy.model_management.interrupt_current_processing(False)


def upscale_graph(kind, node, base_px=128, seed=4):
    """Stock-node text-to-image on ``UltraResTest_TinyDiTCheckpoint(kind)`` (its VAE has the model's
    latent geometry) at ``base_px``², then one ×2 stage of ``node`` → RecordLatent("up") and the image."""
    from comfy_execution.graph_utils import GraphBuilder

    g = GraphBuilder(prefix="")
    ckpt = g.node("UltraResTest_TinyDiTCheckpoint", kind=kind, seed=0)
    model, vae = ckpt.out(0), ckpt.out(2)
    pos = g.node("CLIPTextEncode", clip=ckpt.out(1), text="a red ball")
    neg = g.node("CLIPTextEncode", clip=ckpt.out(1), text="")
    empty = g.node("EmptyFlux2LatentImage" if kind == "flux2" else "EmptySD3LatentImage",
                   width=base_px, height=base_px, batch_size=1)
    base = g.node("KSampler", model=model, positive=pos.out(0), negative=neg.out(0), latent_image=empty.out(0),
                  seed=seed, steps=2, cfg=2.0, sampler_name="euler", scheduler="simple", denoise=1.0)
    common = {"model": model, "vae": vae, "positive": pos.out(0), "negative": neg.out(0), "latent": base.out(0),
              "seed": seed, "steps": 3, "cfg": 2.0}
    if node == "pixelsmith":
        up = g.node("UltraRes_PixelsmithUpscale", **common, scale_by=2.0, target_width=0, target_height=0, slider=-1,
                    patch_size=128, band=32, mode="fast", patch_batch=0, crop_conditioning="fixed",
                    state_device="auto", decode_image=True)  # image px: the same on every model
        image = up.out(1)
    else:
        up = g.node("UltraRes_FreeScaleUpscale", **common, resolutions=str(2 * base_px), cosine_scale=2.0,
                    cosine_scale_bg=1.0, fast_mode=False, dilation=True, freeu=True)
        image = g.node("VAEDecode", samples=up.out(0), vae=vae).out(0)
    g.node("UltraResTest_RecordLatent", samples=up.out(0), tag="up")
    g.node("PreviewImage", images=image)
    return g.finalize()


@pytest.mark.parametrize("kind,node", [(k, node) for node in ("pixelsmith", "freescale") for k in KINDS])
def test_upscale_nodes_run_on_each_dit_with_its_vae_geometry(host, rec, kind, node):
    """One ×2 stage from a stock text-to-image latent, through the model family's VAE geometry:
    Flux.2's packed 128-channel latent at 16 px, Qwen-Image's single-frame Wan latent (B, C, 1, H, W)."""
    host.reset_cache()
    result = host.run(upscale_graph(kind, node))
    out = rec.LATENTS["up"]
    cells = 128 // (16 if kind == "flux2" else 8) * 2
    frame = (1,) if kind == "qwen_image" else ()
    assert out.shape == (1, CHANNELS[kind], *frame, cells, cells) and torch.isfinite(out).all()
    images = [img for o in result.outputs.values() for img in o.get("images", [])]
    assert len(images) == 1, "one 256² picture, not one per latent frame or channel group"


def test_freescale_upscale_names_sd3s_position_table_limit_before_any_stage(host, rec):
    graph = upscale_graph("sd3", "freescale")
    node = next(n for n in graph.values() if n["class_type"] == "UltraRes_FreeScaleUpscale")
    node["inputs"]["resolutions"] = "1024, 4096"
    host.reset_cache()
    with pytest.raises(WorkflowError, match=r"FreeScale Upscale on SD3 / SD3.5: .* covers 2048 px a side, and "
                                            r"4096 x 4096 px is larger"):
        host.run(graph)
    assert "up" not in rec.LATENTS
