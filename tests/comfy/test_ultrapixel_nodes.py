"""UltraPixel nodes on the real host: strict loading, capture, injection, full Stable Cascade graphs.

Tiny stage C / stage B / CLIP from ``UltraResTest_TinyCascade`` (c_hidden [32, 64]) and tiny
UltraPixel weights matching it (``tests/fixtures/ultrares_testing/tiny_ultrapixel.py``). "Official"
means the official code, catcathh/UltraPixel@e85d3bc (sampler and schedule in ``gdf/``).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.ultrapixel_graphs import STEPS, by_tag, cascade, graph_builder, hr_graph, sampling


def fixture_module(host):
    return host.module_of("UltraResTest_RecordUltraPixel")


def stage_b(g, tc, pos, neg, stage_c_latent, stage_b_latent, decode=False):
    """Stock Stable Cascade stage B (+ optional stage A decode) after a stage-C latent."""
    bc = g.node("StableCascade_StageB_Conditioning", conditioning=pos.out(0), stage_c=stage_c_latent)
    bn = g.node("StableCascade_StageB_Conditioning", conditioning=neg.out(0), stage_c=stage_c_latent)
    ks = g.node("KSampler", model=tc.out(1), positive=bc.out(0), negative=bn.out(0), latent_image=stage_b_latent,
                seed=1, steps=2, cfg=1.1, sampler_name="ddpm", scheduler="simple", denoise=1.0)
    g.node("UltraResTest_RecordUltraPixel", tag="stage_b", latent=ks.out(0))
    if decode:
        vae = g.node("UltraResTest_TinyStageA", seed=0)
        dec = g.node("VAEDecodeTiled", samples=ks.out(0), vae=vae.out(0), tile_size=512, overlap=64,
                     temporal_size=64, temporal_overlap=8)
        return g.node("SaveImage", images=dec.out(0), filename_prefix="ultrapixel_test")
    return ks


# Loader


def loader_graph(name):
    g = graph_builder()
    ld = g.node("UltraRes_UltraPixelLoader", ultrapixel_name=name, weight_dtype="default")
    g.node("UltraResTest_RecordUltraPixel", tag="loaded", ultrapixel_model=ld.out(0))
    return g.finalize()


@pytest.mark.parametrize("fmt,name", [("pickle", "tiny_pickle_ultrapixel_t2i.safetensors"),
                                      ("safetensors", "tiny_real.safetensors")])
def test_loader_reads_pickle_and_safetensors_strictly(host, ultrapixel_records, fmt, name):
    fx = fixture_module(host)
    fx.write_tiny_ultrapixel(name, fmt=fmt, seed=3)
    host.run(loader_graph(name))
    model = by_tag(ultrapixel_records, "loaded")["ultrapixel_model"]
    expected = fx.tiny_ultrapixel_state(seed=3)
    assert model.channels() == {"E0": 32, "E1": 64, "D0": 64, "D1": 32}, "sizes are read from the file"
    for point, prefix in fx.POINT_PREFIX.items():
        local = model.modules[point].state_dict()
        assert len(local) == 42
        for key, value in local.items():
            assert torch.equal(value, expected["module." + prefix + key]), (point, key)


def test_loader_names_missing_extra_and_misshaped_keys(host):
    fx = fixture_module(host)
    state = fx.tiny_ultrapixel_state(seed=0)
    state.pop("module.64.1.wtokens")
    state["module.66.0.extra_weight"] = torch.zeros(3)
    fx.write_tiny_ultrapixel("tiny_wrong_keys.pt", state=state)
    with pytest.raises(Exception, match=r"(?s)missing key: 64\.1\.wtokens.*unexpected key: 66\.0\.extra_weight"):
        host.run(loader_graph("tiny_wrong_keys.pt"))

    state = fx.tiny_ultrapixel_state(seed=0)
    state["module.65.0.toout.2.bias"] = torch.zeros(5)
    fx.write_tiny_ultrapixel("tiny_wrong_shape.safetensors", fmt="safetensors", state=state)
    with pytest.raises(Exception, match=r"(?s)ultrapixel_name.*D0.*toout\.2\.bias: expected \(64,\), got \(5,\)"):
        host.run(loader_graph("tiny_wrong_shape.safetensors"))


# Capture


def lr_graph(pos_text, neg_text, steps, seed=1):
    g = graph_builder()
    tc, pos, neg = cascade(g, pos_text, neg_text)
    lr = g.node("UltraRes_UltraPixelLRGuidance", model=tc.out(0), positive=pos.out(0), negative=neg.out(0),
                **sampling(steps=steps, seed=seed))
    g.node("UltraResTest_RecordUltraPixel", tag="lr", latent=lr.out(1), guidance=lr.out(0))
    return g.finalize()


def last_step_sigma(steps: int) -> float:
    """sigma of the official grid's last evaluated time t = 1/steps at shift 1 (cosine schedule of ``gdf/``)."""
    t = np.linspace(1.0, 0.0, steps + 1)[-2]
    alpha = np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2 / np.cos(0.008 / 1.008 * np.pi / 2) ** 2
    return float(np.sqrt((1 - alpha) / alpha))


def test_captured_features_are_the_conditional_half_at_the_last_step(host, ultrapixel_records):
    # One step: the model input is the same noise whatever the prompts, so the captured
    # features depend only on which half of the CFG batch was kept.
    host.run(lr_graph("a red fox", "a blue whale", steps=1))
    a = by_tag(ultrapixel_records, "lr")["guidance"]
    host.run(lr_graph("a red fox", "a red fox", steps=1))
    same_cond = by_tag(ultrapixel_records, "lr")["guidance"]
    host.run(lr_graph("a blue whale", "a red fox", steps=1))
    swapped = by_tag(ultrapixel_records, "lr")["guidance"]
    for point in ("E0", "E1", "D0", "D1"):
        assert a.features[point].shape[0] == 1, "cond half only (batch 1, not 2)"
        assert torch.equal(a.features[point], same_cond.features[point]), point
        assert not torch.allclose(a.features[point], swapped.features[point]), point
    assert a.lr_latent_size == (24, 24), "square target: LR 1024² px = 24² stage-C latent"
    assert a.features["E1"].shape == (1, 64, 24, 24)

    # Several steps: the features kept are those of the last model call (t = 0.05 for 20 steps).
    host.run(lr_graph("a red fox", "", steps=STEPS))
    g = by_tag(ultrapixel_records, "lr")["guidance"]
    assert g.sigma == pytest.approx(last_step_sigma(STEPS), rel=1e-4)


# Injection


def test_zero_module_output_equals_stock_model_and_real_output_changes_it(host, ultrapixel_records):
    host.run(hr_graph(zero_output=False, patched=False))
    stock = by_tag(ultrapixel_records, "hr")["latent"]
    host.run(hr_graph(zero_output=True, patched=True))
    zero = by_tag(ultrapixel_records, "hr")["latent"]
    host.run(hr_graph(zero_output=False, patched=True))
    guided = by_tag(ultrapixel_records, "hr")["latent"]
    assert stock.shape == (1, 16, 6, 6), "HR latent is ceil(256 / 42.67) = 6"
    assert torch.equal(stock, zero)
    assert (guided - stock).abs().mean() > 1e-3 * stock.abs().mean(), "the guidance must act"


def test_decoder_scale_rule_at_node_level(host):
    """The injected residual is u on the encoder and 0.3 / 0.5 / 0.7 u on the decoder (48² / 72² / 96²)."""
    fx = fixture_module(host)
    loader = fx.pack_module("nodes.ultrapixel_loader")
    patch = fx.pack_module("nodes.ultrapixel_patch")
    r_embedding = fx.pack_module("kernels.ultrapixel_norm").r_embedding
    up_model = loader.load_ultrapixel(fx.tiny_ultrapixel_state(seed=1), "tiny")
    gen = torch.Generator().manual_seed(0)
    feats = {p: torch.randn(1, c, 4, 4, generator=gen) for p, c in up_model.channels().items()}
    data = patch.LRFeatures(features=feats, sigma=0.1, lr_latent_size=(4, 4))
    model = fx.tiny_models.tiny_cascade("c", 0)
    clone, hook = patch.inject_clone(model, up_model, data, 0.0)
    for point, side, expected in (("E0", 96, 1.0), ("D1", 48, 0.3), ("D0", 72, 0.5), ("D1", 96, 0.7)):
        key = patch.PATCH_KEYS[point]
        c = up_model.channels()[point]
        out = torch.randn(2, c, side, side, generator=gen)
        topts = {"cond_or_uncond": [0, 1], "sigmas": torch.tensor([1.0, 1.0])}
        delta = clone.object_patches[key].hook(point, out, topts) - out
        module = hook.module(point, out.device, out.dtype)
        r = model.get_model_object("model_sampling").timestep(torch.tensor([1.0, 1.0]))
        u = module(out, feats[point].expand(2, -1, -1, -1), r_embedding(r))
        torch.testing.assert_close(delta, expected * u, rtol=1e-4, atol=1e-4)
    hook.release()
    assert not hook.modules and not hook.g_up


# Full graphs


def all_in_one_graph(seed=1, neg_text="", decode=False):
    g = graph_builder()
    tc, pos, neg = cascade(g, neg_text=neg_text)
    upm = g.node("UltraResTest_TinyUltraPixel", seed=0, zero_output=False)
    sc = g.node("UltraRes_UltraPixelStageC", model=tc.out(0), ultrapixel_model=upm.out(0), positive=pos.out(0),
                negative=neg.out(0), batch_size=1, **sampling(seed=seed))
    g.node("UltraResTest_RecordUltraPixel", tag="stage_c", latent=sc.out(0))
    g.node("UltraResTest_RecordUltraPixel", tag="lr_stage_c", latent=sc.out(2))
    save = stage_b(g, tc, pos, neg, sc.out(0), sc.out(1), decode=decode)
    return g.finalize(), save.id


def test_all_in_one_feeds_stage_b_and_stage_a_and_is_seeded(host, ultrapixel_records):
    graph, save_id = all_in_one_graph(seed=1, decode=True)
    image = host.saved_images(host.run(graph), save_id)[0]
    first = by_tag(ultrapixel_records, "stage_c")["latent"]
    b_first = by_tag(ultrapixel_records, "stage_b")["latent"]
    assert image.shape == (256, 256, 3)
    assert first.shape == (1, 16, 6, 6) and by_tag(ultrapixel_records, "lr_stage_c")["latent"].shape == (1, 16, 24, 24)
    assert b_first.shape == (1, 4, 64, 64)
    assert torch.isfinite(first).all() and torch.isfinite(b_first).all()

    host.run(all_in_one_graph(seed=2)[0])
    assert not torch.allclose(by_tag(ultrapixel_records, "stage_c")["latent"], first), "another seed changes it"
    host.run(all_in_one_graph(seed=1, neg_text="blurry, low quality")[0])
    assert not torch.allclose(by_tag(ultrapixel_records, "stage_c")["latent"], first), "the negative prompt is used"

    result = host.run(graph)  # seed 1 again: the sampler nodes run again (their cached inputs changed since)
    assert {n for n, v in graph.items() if v["class_type"] == "UltraRes_UltraPixelStageC"} <= result.executed
    assert torch.equal(by_tag(ultrapixel_records, "stage_c")["latent"], first), "same seed, same stage-C latent"
    assert np.array_equal(host.saved_images(result, save_id)[0], image), "same seed, same image"


def test_step_wise_graph_feeds_stage_b(host, ultrapixel_records):
    g = graph_builder()
    tc, pos, neg = cascade(g)
    lr = g.node("UltraRes_UltraPixelLRGuidance", model=tc.out(0), positive=pos.out(0), negative=neg.out(0),
                **sampling())
    upm = g.node("UltraResTest_TinyUltraPixel", seed=0, zero_output=False)
    inr = g.node("UltraRes_UltraPixelINRUpscale", ultrapixel_model=upm.out(0), guidance=lr.out(0),
                 width=256, height=256)
    ap = g.node("UltraRes_UltraPixelApply", model=tc.out(0), ultrapixel_model=upm.out(0), guidance=inr.out(0),
                cfg_rescale=0.7)
    ks = g.node("KSampler", model=ap.out(0), positive=pos.out(0), negative=neg.out(0), latent_image=inr.out(1),
                seed=1, steps=STEPS, cfg=4.0, sampler_name="ddpm", scheduler="simple", denoise=1.0)
    stage_b(g, tc, pos, neg, ks.out(0), inr.out(2))
    host.run(g.finalize())
    out = by_tag(ultrapixel_records, "stage_b")["latent"]
    assert out.shape == (1, 4, 64, 64) and torch.isfinite(out).all()


def test_img2img_lr_latent_changes_the_guidance(host, ultrapixel_records):
    def run(source: str):
        g = graph_builder()
        tc, pos, neg = cascade(g)
        if source == "zeros":  # any size: resized to the 24² LR latent
            lr_in = g.node("StableCascade_EmptyLatentImage", width=512, height=512, compression=42, batch_size=1).out(0)
        else:  # a real stage-C result
            lr_in = g.node("UltraRes_UltraPixelLRGuidance", model=tc.out(0), positive=pos.out(0),
                           negative=neg.out(0), **sampling(seed=5)).out(1)
        lr = g.node("UltraRes_UltraPixelLRGuidance", model=tc.out(0), positive=pos.out(0), negative=neg.out(0),
                    lr_latent=lr_in, **sampling())
        g.node("UltraResTest_RecordUltraPixel", tag="lr", latent=lr.out(1), guidance=lr.out(0))
        host.run(g.finalize())
        return by_tag(ultrapixel_records, "lr")["guidance"]

    a, b = run("zeros"), run("sampled")
    assert a.features["E0"].shape == b.features["E0"].shape == (1, 32, 24, 24)
    assert a.sigma == b.sigma == pytest.approx(last_step_sigma(STEPS), rel=1e-4), "re-noised to the last LR step"
    assert not torch.allclose(a.features["E0"], b.features["E0"]), "features describe the given LR latent"


def test_official_sigma_grid_on_comfyui_sampling(host):
    """Shift 1 on ComfyUI's StableCascadeSampling gives the official sigmas and r = t."""
    fx = fixture_module(host)
    gm = fx.pack_module("nodes.ultrapixel_passes")
    model = fx.tiny_models.tiny_cascade("c", 0)
    assert float(model.get_model_object("model_sampling").shift) == 2.0, "ComfyUI's stage-C default"
    sampled = gm.with_shift(model, 1.0)
    sigmas = gm.official_sigmas(sampled, 20)
    assert sigmas.tolist() == pytest.approx(
        [99.995, 12.80727, 6.36459, 4.19954, 3.10373, 2.43544, 1.9807, 1.64777, 1.39075, 1.18408, 1.01239,
         0.86585, 0.73787, 0.62383, 0.52038, 0.42499, 0.33572, 0.25099, 0.16944, 0.08976, 0.0], rel=1e-4, abs=1e-5)
    r = sampled.get_model_object("model_sampling").timestep(sigmas[:-1])
    assert r[0].item() == pytest.approx(0.99358, abs=1e-4)
    assert r[1:].tolist() == pytest.approx([1 - 0.05 * i for i in range(1, 20)], abs=1e-4)
    assert gm.with_shift(sampled, 1.0) is sampled, "no second patch when the shift already matches"


def test_all_in_one_img2img_uses_the_image_as_lr_source(host, ultrapixel_records):
    def run(colour: float | None, with_vae=True):
        g = graph_builder()
        tc, pos, neg = cascade(g)
        upm = g.node("UltraResTest_TinyUltraPixel", seed=0, zero_output=False)
        extra = {}
        if colour is not None:
            extra["image"] = g.node("EmptyImage", width=320, height=192, batch_size=1,
                                    color=int(colour * 255) * 0x010101).out(0)
            if with_vae:
                extra["vae"] = g.node("UltraResTest_TinyStageCVAE", seed=0).out(0)
        sc = g.node("UltraRes_UltraPixelStageC", model=tc.out(0), ultrapixel_model=upm.out(0), positive=pos.out(0),
                    negative=neg.out(0), batch_size=1, **sampling(), **extra)
        g.node("UltraResTest_RecordUltraPixel", tag="stage_c", latent=sc.out(0))
        g.node("UltraResTest_RecordUltraPixel", tag="lr_stage_c", latent=sc.out(2))
        host.run(g.finalize())
        return by_tag(ultrapixel_records, "stage_c")["latent"], by_tag(ultrapixel_records, "lr_stage_c")["latent"]

    dark, dark_lr = run(0.1)
    bright, bright_lr = run(0.9)
    assert dark_lr.shape == (1, 16, 24, 24), "the image is encoded at the LR size (24 x 32 px per cell)"
    assert not torch.allclose(dark, bright), "the HR result follows the LR source image"
    with pytest.raises(Exception, match="vae"):
        run(0.5, with_vae=False)
