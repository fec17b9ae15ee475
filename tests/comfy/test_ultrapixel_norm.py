"""UltraPixel Scale-Aware Norm and the LR size on the real host (tiny stage C, seeded tiny modules).

* ``auto`` / ``auto`` is the paper's behaviour: bit-identical latents to Apply / Stage C without
  the node;
* a manual sigma_s, SAN off and a manual decoder strength each change the picture, and the
  strength is the weight of the decoder residual;
* bad values are refused with the input's name, before any sampling;
* ``lr_size`` sets the LR pass's latent (12² at 512 px) and is refused when not a multiple of 32;
* a batch of two runs (the HR pass's time embedding per sample).
"""
from __future__ import annotations

import pytest
import torch

from harness.comfy_host import WorkflowError
from harness.ultrapixel_graphs import by_tag, cascade, graph_builder, hr_graph, sampling

AUTO = {"scale": "auto", "sigma_s": 1.2, "strength": "auto", "decoder_strength": 0.5}


def stage_c_graph(norm: dict | None, **overrides):
    g = graph_builder()
    tc, pos, neg = cascade(g)
    upm = g.node("UltraResTest_TinyUltraPixel", seed=0, zero_output=False)
    extra = dict(overrides)
    if norm is not None:
        extra["norm"] = g.node("UltraRes_UltraPixelScaleAwareNorm", **norm).out(0)
    sc = g.node("UltraRes_UltraPixelStageC", model=tc.out(0), ultrapixel_model=upm.out(0), positive=pos.out(0),
                negative=neg.out(0), **{"batch_size": 1, **sampling(), **extra})
    g.node("UltraResTest_RecordUltraPixel", tag="stage_c", latent=sc.out(0))
    g.node("UltraResTest_RecordUltraPixel", tag="lr_stage_c", latent=sc.out(2))
    return g.finalize()


def hr_latent(host, records, graph, tag="hr"):
    host.run(graph)
    return by_tag(records, tag)["latent"]


def test_auto_is_bit_identical_to_no_norm_node(host, ultrapixel_records):
    assert torch.equal(hr_latent(host, ultrapixel_records, hr_graph(norm=AUTO)),
                       hr_latent(host, ultrapixel_records, hr_graph(norm=None)))
    assert torch.equal(hr_latent(host, ultrapixel_records, stage_c_graph(AUTO), "stage_c"),
                       hr_latent(host, ultrapixel_records, stage_c_graph(None), "stage_c"))


@pytest.mark.parametrize("change", [{"scale": "manual", "sigma_s": 0.8}, {"scale": "off"},
                                    {"strength": "manual", "decoder_strength": 0.0}],
                         ids=["manual-sigma", "san-off", "decoder-strength-0"])
def test_each_setting_changes_the_picture(host, ultrapixel_records, change):
    paper = hr_latent(host, ultrapixel_records, hr_graph(norm=AUTO))
    changed = hr_latent(host, ultrapixel_records, hr_graph(norm={**AUTO, **change}))
    assert (changed - paper).abs().mean() > 1e-4 * paper.abs().mean()


def test_manual_sigma_is_the_auto_value_of_that_size(host):
    """sigma_s = the value the paper computes at 96² gives, at 96², exactly what auto gives there."""
    fx = host.module_of("UltraResTest_RecordUltraPixel")
    kernels = fx.pack_module("kernels.ultrapixel")
    scale_value = fx.pack_module("kernels.ultrapixel_norm").scale_value
    module = fx.pack_module("nodes.ultrapixel_loader").load_ultrapixel(fx.tiny_ultrapixel_state(seed=1), "t").modules
    gen = torch.Generator().manual_seed(0)
    f = torch.randn(1, 32, 96, 96, generator=gen)
    g_up = torch.randn(1, 32, 96, 96, generator=gen)
    t_emb = torch.randn(1, 64, generator=gen)
    auto = module["E0"].fuse(f, g_up, t_emb)
    manual = module["E0"].fuse(f, g_up, t_emb, kernels.NormSettings(sigma_s=scale_value(96, 96)))
    other = module["E0"].fuse(f, g_up, t_emb, kernels.NormSettings(sigma_s=scale_value(48, 48)))
    torch.testing.assert_close(manual, auto, rtol=1e-5, atol=1e-5)
    assert (other - auto).abs().mean() > 1e-3


def test_manual_strength_is_the_decoder_weight(host):
    fx = host.module_of("UltraResTest_RecordUltraPixel")
    patch = fx.pack_module("nodes.ultrapixel_patch")
    kernels = fx.pack_module("kernels.ultrapixel")
    up_model = fx.pack_module("nodes.ultrapixel_loader").load_ultrapixel(fx.tiny_ultrapixel_state(seed=1), "t")
    gen = torch.Generator().manual_seed(0)
    feats = {p: torch.randn(1, c, 4, 4, generator=gen) for p, c in up_model.channels().items()}
    data = patch.LRFeatures(features=feats, sigma=0.1, lr_latent_size=(4, 4))
    model = fx.tiny_models.tiny_cascade("c", 0)
    topts = {"cond_or_uncond": [0, 1], "sigmas": torch.tensor([1.0, 1.0])}
    deltas = {}
    for strength in (None, 1.25):
        clone, hook = patch.inject_clone(model, up_model, data, 0.0, kernels.NormSettings(decoder_strength=strength))
        for point in ("E0", "D1"):
            out = torch.ones(2, up_model.channels()[point], 48, 48)
            deltas[strength, point] = clone.object_patches[patch.PATCH_KEYS[point]].hook(point, out, topts) - out
        hook.release()
    torch.testing.assert_close(deltas[1.25, "D1"], deltas[None, "D1"] * (1.25 / 0.3), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(deltas[1.25, "E0"], deltas[None, "E0"]), "the encoder keeps weight 1"


@pytest.mark.parametrize("bad,match", [
    ({"sigma_s": float("nan")}, r"sigma_s: nan is not a finite number"),
    ({"scale": "manual", "sigma_s": 0.0}, r"Value 0\.0 smaller than min of 0\.1: sigma_s"),
    ({"strength": "manual", "decoder_strength": float("inf")}, r"Value inf bigger than max of 2\.0: decoder_strength"),
])
def test_bad_values_are_refused_by_name(host, ultrapixel_records, bad, match):
    before = len(ultrapixel_records)
    with pytest.raises(WorkflowError, match=match):
        host.run(hr_graph(norm={**AUTO, **bad}))
    assert len(ultrapixel_records) == before, "nothing sampled"


def test_unknown_mode_is_refused_by_name(host):
    norm = host.module_of("UltraRes_UltraPixelScaleAwareNorm")
    with pytest.raises(ValueError, match=r"scale: expected one of \['auto', 'manual', 'off'\], got 'strong'"):
        norm.norm_settings("strong", 1.2, "auto", 0.5)
    with pytest.raises(ValueError, match=r"strength: expected one of \['auto', 'manual'\], got 'max'"):
        norm.norm_settings("auto", 1.2, "max", 0.5)


def test_lr_size_sets_the_lr_latent_and_is_checked(host, ultrapixel_records):
    host.run(stage_c_graph(None, lr_size=512, width=1024, height=1024))
    assert by_tag(ultrapixel_records, "lr_stage_c")["latent"].shape == (1, 16, 12, 12)
    assert by_tag(ultrapixel_records, "stage_c")["latent"].shape == (1, 16, 24, 24)
    with pytest.raises(WorkflowError, match=r"lr_size: 1000 px is not a multiple of 32"):
        host.run(stage_c_graph(None, lr_size=1000))


def test_stage_c_batch_of_two(host, ultrapixel_records):
    """Each sample of a batch gets the step's time embedding (ComfyUI passes one sigma per sample)."""
    host.run(stage_c_graph(None, batch_size=2))
    latent = by_tag(ultrapixel_records, "stage_c")["latent"]
    assert latent.shape == (2, 16, 6, 6) and torch.isfinite(latent).all()
    assert not torch.allclose(latent[0], latent[1]), "each sample has its own noise"
