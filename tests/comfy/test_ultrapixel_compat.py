"""UltraPixel with stock LoRA loading and a Stable Cascade ControlNet, on the real host.

The issue asks that "stock LoRA loaders on stage C and Stable Cascade ControlNet must work with
the patched model". UltraPixel patches stage C with object patches (a wrapper AttnBlock sharing
the stock block's submodules); LoRA is a weight patch and a ControlNet is a conditioning entry, so
all three must compose in any order. Graphs use the tiny stage C / CLIP of
``UltraResTest_TinyCascade``, tiny UltraPixel modules (``tiny_ultrapixel.py``), synthetic LoRA files
loaded by the stock ``LoraLoaderModelOnly`` and ComfyUI's own Stable Cascade ControlNet class
(``tiny_cascade_extras.py``) applied with the stock ``ControlNetApplyAdvanced``.
"""
from __future__ import annotations

import math

import pytest
import torch

from harness.ultrapixel_graphs import STEPS, by_tag, cascade, graph_builder, sampling

SIZE = 128  # HR stage-C latent ceil(128 / 42.67) = 3; the LR pass is 24² whatever the target
PROBED = "diffusion_model.down_blocks.0.2.attention.attn.to_q.weight"  # inside the E0 patched AttnBlock
LORA_RANK = 4
LORA_ALPHA = 2.0


# Synthetic LoRA files in a "loras" folder registered in-process


def lora_tensors(shapes: dict[str, tuple[int, int]], key_format: str, seed: int) -> dict[str, torch.Tensor]:
    """kohya-style LoRA (lora_up / lora_down / alpha) for the given stage-C Linear weights."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for module, (n_out, n_in) in sorted(shapes.items()):
        name = module.replace(".", "_") if key_format == "lora_prior_unet_" else module
        prefix = key_format + name
        out[prefix + ".lora_up.weight"] = torch.randn(n_out, LORA_RANK, generator=gen) / math.sqrt(LORA_RANK)
        out[prefix + ".lora_down.weight"] = torch.randn(LORA_RANK, n_in, generator=gen) / math.sqrt(n_in)
        out[prefix + ".alpha"] = torch.tensor(LORA_ALPHA)
    return out


def lora_delta(lora: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    """The weight change ComfyUI's LoRA adapter applies at strength 1: alpha / rank * up @ down."""
    up, down = lora[prefix + ".lora_up.weight"], lora[prefix + ".lora_down.weight"]
    return lora[prefix + ".alpha"].item() / down.shape[0] * (up @ down)


@pytest.fixture(scope="module")
def loras(host, tmp_path_factory):
    """Two LoRA files for the tiny stage C and its seed-0 weights.

    ``all``: every Linear of stage C's down/up blocks (ResBlocks, the four patched AttnBlocks'
    q/k/v/out and kv_mapper), Stable Cascade's trainer naming ``lora_prior_unet_<module>``.
    ``to_q``: only the E0 AttnBlock's query projection, in ComfyUI's generic
    ``diffusion_model.<module>`` naming.
    """
    import folder_paths
    from safetensors.torch import save_file

    tiny_models = host.module_of("UltraResTest_TinyCascade").tiny_models
    stage_c = tiny_models.tiny_cascade("c", 0).model.diffusion_model.state_dict()
    linears = {k[:-len(".weight")]: tuple(v.shape) for k, v in stage_c.items()
               if k.startswith(("down_blocks.", "up_blocks.")) and k.endswith(".weight") and v.ndim == 2}
    attn_blocks = ("down_blocks.0.2.", "down_blocks.1.2.", "up_blocks.0.2.", "up_blocks.1.2.")
    attn = [m for m in linears if m.startswith(attn_blocks)]
    assert len(attn) == 4 * 5, "q, k, v, out_proj and kv_mapper.1 in each of the four patched AttnBlocks"

    folder = tmp_path_factory.mktemp("loras")
    all_lora = lora_tensors(linears, "lora_prior_unet_", 11)
    q_module = PROBED[:-len(".weight")]
    q_lora = lora_tensors({q_module: linears[q_module[len("diffusion_model."):]]}, "", 12)
    save_file(all_lora, str(folder / "ultrares_tiny_stage_c_all.safetensors"))
    save_file(q_lora, str(folder / "ultrares_tiny_stage_c_e0_to_q.safetensors"))
    folder_paths.add_model_folder_path("loras", str(folder))
    return {"all": "ultrares_tiny_stage_c_all.safetensors", "all_tensors": all_lora,
            "to_q": "ultrares_tiny_stage_c_e0_to_q.safetensors", "to_q_tensors": q_lora, "to_q_prefix": q_module,
            "base_weight": stage_c[PROBED[len("diffusion_model."):]]}


# Graphs


def control(g, pos, neg, strength, colour):
    """Stock ControlNetApplyAdvanced with the tiny Stable Cascade ControlNet and a flat hint image."""
    cn = g.node("UltraResTest_TinyCascadeControlNet", seed=0)
    hint = g.node("EmptyImage", width=SIZE, height=SIZE, batch_size=1, color=colour)
    ca = g.node("ControlNetApplyAdvanced", positive=pos.out(0), negative=neg.out(0), control_net=cn.out(0),
                image=hint.out(0), strength=strength, start_percent=0.0, end_percent=1.0)
    return ca.out(0), ca.out(1)


def stepwise(lora=None, order="lora_then_apply", apply=True, zero_output=False, lora_in_lr=True,
             hr_control=None, probe=None):
    """LR Guidance -> INR Upscale -> HR model -> stock KSampler, with LoRA / ControlNet / probe options.

    order: "lora_then_apply" = Apply(LoraLoader(stage C)); "apply_then_lora" = LoraLoader(Apply(stage C)).
    lora_in_lr: the LR pass samples the LoRA'd stage C too (as a user would wire it).
    hr_control: (strength, colour) of a ControlNet on the HR pass's conditioning only.
    """
    g = graph_builder()
    tc, pos, neg = cascade(g, neg_text="blurry")
    base = tc.out(0)
    lora_model = base
    if lora:
        lora_model = g.node("LoraLoaderModelOnly", model=base, lora_name=lora, strength_model=1.0).out(0)
    lr = g.node("UltraRes_UltraPixelLRGuidance", model=lora_model if lora_in_lr else base,
                positive=pos.out(0), negative=neg.out(0), **sampling(width=SIZE, height=SIZE))
    upm = g.node("UltraResTest_TinyUltraPixel", seed=0, zero_output=zero_output)
    inr = g.node("UltraRes_UltraPixelINRUpscale", ultrapixel_model=upm.out(0), guidance=lr.out(0),
                 width=SIZE, height=SIZE)

    def apply_to(m):
        return g.node("UltraRes_UltraPixelApply", model=m, ultrapixel_model=upm.out(0), guidance=inr.out(0),
                      cfg_rescale=0.0).out(0)

    if not apply:
        hr_model = lora_model
    elif order == "lora_then_apply":
        hr_model = apply_to(lora_model)
    else:
        hr_model = apply_to(base)
        if lora:
            hr_model = g.node("LoraLoaderModelOnly", model=hr_model, lora_name=lora, strength_model=1.0).out(0)
    if probe:
        hr_model = g.node("UltraResTest_StageCProbe", model=hr_model, tag=probe, weight_key=PROBED).out(0)
    positive, negative = pos.out(0), neg.out(0)
    if hr_control is not None:
        positive, negative = control(g, pos, neg, *hr_control)
    ks = g.node("KSampler", model=hr_model, positive=positive, negative=negative, latent_image=inr.out(1),
                seed=1, steps=STEPS, cfg=4.0, sampler_name="euler", scheduler="simple", denoise=1.0)
    g.node("UltraResTest_RecordUltraPixel", tag="hr", latent=ks.out(0))
    return g.finalize()


def all_in_one(lora=None, control_args=None, zero_output=False):
    g = graph_builder()
    tc, pos, neg = cascade(g, neg_text="blurry")
    model = tc.out(0)
    if lora:
        model = g.node("LoraLoaderModelOnly", model=model, lora_name=lora, strength_model=1.0).out(0)
    model = g.node("UltraResTest_StageCProbe", model=model, tag="all_in_one", weight_key=PROBED).out(0)
    positive, negative = pos.out(0), neg.out(0)
    if control_args is not None:
        positive, negative = control(g, pos, neg, *control_args)
    upm = g.node("UltraResTest_TinyUltraPixel", seed=0, zero_output=zero_output)
    sc = g.node("UltraRes_UltraPixelStageC", model=model, ultrapixel_model=upm.out(0), positive=positive,
                negative=negative, batch_size=1, **sampling(width=SIZE, height=SIZE))
    g.node("UltraResTest_RecordUltraPixel", tag="stage_c", latent=sc.out(0))
    return g.finalize()


def run_latent(host, latents, graph, tag="hr"):
    host.run(graph)
    out = by_tag(latents, tag)["latent"]
    assert torch.isfinite(out).all()
    return out


def differs(a, b):
    return (a - b).abs().mean().item() > 1e-3 * b.abs().mean().item()


# LoRA


def test_stock_lora_and_ultrapixel_apply_compose_in_either_order(host, ultrapixel_records, stage_c_probes, loras):
    latents, probes = ultrapixel_records, stage_c_probes
    lora_only = run_latent(host, latents, stepwise(lora=loras["all"], apply=False))
    ultrapixel_only = run_latent(host, latents, stepwise())
    lora_then_apply = run_latent(host, latents, stepwise(lora=loras["all"], probe="lora_then_apply"))
    apply_then_lora = run_latent(host, latents, stepwise(lora=loras["all"], order="apply_then_lora",
                                                         probe="apply_then_lora"))
    zero_modules = run_latent(host, latents, stepwise(lora=loras["all"], zero_output=True))

    assert lora_then_apply.shape == (1, 16, 3, 3)
    assert differs(lora_then_apply, ultrapixel_only), "the LoRA changes the UltraPixel result"
    assert differs(lora_then_apply, lora_only), "UltraPixel is still active on the LoRA'd stage C"
    assert torch.equal(lora_then_apply, apply_then_lora), "object patches and weight patches are independent"
    assert torch.equal(zero_modules, lora_only), "with zero-output modules the wrapper leaves the LoRA'd model exact"
    for tag in ("lora_then_apply", "apply_then_lora"):
        seen = by_tag(probes, tag)["blocks"]
        assert set(seen.values()) == {"UltraPixelAttnBlock"}, (tag, seen)


@pytest.mark.parametrize("order", ["lora_then_apply", "apply_then_lora"])
def test_lora_key_inside_a_patched_attn_block_is_applied(host, ultrapixel_records, stage_c_probes, loras, order):
    """A LoRA holding only E0's to_q (inside the wrapped AttnBlock) patches the weight the wrapper runs."""
    latents, probes = ultrapixel_records, stage_c_probes
    # LR pass on the plain stage C: any HR difference comes from the LoRA inside the patched HR model.
    without = run_latent(host, latents, stepwise(order=order, probe="without", lora_in_lr=False))
    with_lora = run_latent(host, latents, stepwise(lora=loras["to_q"], order=order, probe="with", lora_in_lr=False))

    expected = loras["base_weight"] + lora_delta(loras["to_q_tensors"], loras["to_q_prefix"])
    seen = by_tag(probes, "with")
    assert seen["blocks"]["down_blocks.0.2"] == "UltraPixelAttnBlock", "the LoRA'd block is the patched one"
    torch.testing.assert_close(seen["weight"], expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(expected, loras["base_weight"])
    torch.testing.assert_close(by_tag(probes, "without")["weight"], loras["base_weight"], rtol=0, atol=0)
    assert differs(with_lora, without), "the single-key LoRA changes the patched model's output"


# Stable Cascade ControlNet


def test_stable_cascade_controlnet_on_the_ultrapixel_stage_c(host, ultrapixel_records, stage_c_probes):
    latents, probes = ultrapixel_records, stage_c_probes
    off = run_latent(host, latents, stepwise(probe="off", hr_control=(0.0, 0x808080)))
    grey = run_latent(host, latents, stepwise(probe="grey", hr_control=(1.0, 0x808080)))
    white = run_latent(host, latents, stepwise(probe="white", hr_control=(1.0, 0xFFFFFF)))
    grey_no_up = run_latent(host, latents, stepwise(hr_control=(1.0, 0x808080), apply=False))

    assert by_tag(probes, "off")["control"] is None
    seen = by_tag(probes, "grey")
    assert set(seen["blocks"].values()) == {"UltraPixelAttnBlock"}
    # One entry per stage-C ResBlock, popped from the end: down-0 and up-0 (32 channels) get control.
    entries = seen["control"]
    assert [e is None for e in entries] == [False, True, True, False], entries
    assert all(e[1] == 32 for e in (entries[0], entries[3])), entries
    assert differs(grey, off), "the ControlNet changes the patched model's output"
    assert differs(white, grey), "the hint image is used"
    assert differs(grey, grey_no_up), "UltraPixel is still active with the ControlNet"


# The all-in-one node


def test_all_in_one_with_lora_and_stable_cascade_controlnet(host, ultrapixel_records, stage_c_probes, loras):
    latents, probes = ultrapixel_records, stage_c_probes
    plain = run_latent(host, latents, all_in_one(), "stage_c")
    probes.clear()
    lora = run_latent(host, latents, all_in_one(lora=loras["all"]), "stage_c")
    lora_calls = [p for p in probes if p["tag"] == "all_in_one"]
    probes.clear()
    controlled = run_latent(host, latents, all_in_one(control_args=(1.0, 0x808080)), "stage_c")
    control_calls = [p for p in probes if p["tag"] == "all_in_one"]

    hints = [tuple(c["control"][0][-2:]) for c in control_calls]  # the ControlNet's 32-channel output, H x W
    assert hints[0] == (24 * 8, 24 * 8) and hints[-1] == (3 * 8, 3 * 8) and set(hints) == {hints[0], hints[-1]}, \
        "the ControlNet reaches both passes: the LR (24²) latent, then the HR (3²) one"
    for p in lora_calls + control_calls:
        assert set(p["blocks"].values()) == {"UltraPixelAttnBlock"}, "both passes run through the wrappers"
    prior_key = "lora_prior_unet_" + PROBED[len("diffusion_model."):-len(".weight")].replace(".", "_")
    expected = loras["base_weight"] + lora_delta(loras["all_tensors"], prior_key)
    for p in lora_calls:  # Stable Cascade's lora_prior_unet_ naming, live in both passes
        torch.testing.assert_close(p["weight"], expected, rtol=1e-5, atol=1e-6)
    assert differs(lora, plain), "the LoRA changes the all-in-one result"
    assert differs(controlled, plain), "the ControlNet changes the all-in-one result"
