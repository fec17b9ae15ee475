"""FreeScale Scale Fusion patch on the real host: it reaches KSampler and is faithful at n = 1."""
from __future__ import annotations

import numpy as np

from harness.graphs import txt2img

FUSION = ("UltraRes_FreeScaleScaleFusion",
          {"fast_mode": False, "start_percent": 0.0, "end_percent": 1.0, "jitter_seed": 0, "jitter": True})


def test_patch_reaches_ksampler(host, probe_records):
    graph, ids = txt2img(kind="sdxl", seed=5, size=64, steps=2, model_patch=FUSION, probe=True)
    host.run(graph)
    calls = [r for r in probe_records if r["tag"] == "ksampler"]
    assert len(calls) == 2, "one CFG-batched model call per step"
    patched = [k for k in calls[0]["object_patches"] if k.endswith(".attn1")]
    # Tiny SDXL: one transformer block in input_blocks 7-8, the middle and output_blocks 0-2.
    assert len(patched) == 6 and all(k.startswith("diffusion_model.") for k in patched)


def test_single_window_equals_plain_attention(host):
    """Below 2048 px there is one window spanning the map: fusion = global attention (as in the official code)."""
    plain, plain_ids = txt2img(kind="sdxl", seed=6, size=64, steps=2)
    fused, fused_ids = txt2img(kind="sdxl", seed=6, size=64, steps=2, model_patch=FUSION)
    a = host.saved_images(host.run(plain), plain_ids["save"])[0]
    b = host.saved_images(host.run(fused), fused_ids["save"])[0]
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_fusion_changes_a_2048_wide_image_and_is_seeded(host):
    def render(model_patch):
        graph, ids = txt2img(kind="sdxl", seed=7, size=64, steps=1, model_patch=model_patch)
        graph[ids["ksampler"]]["inputs"]["latent_image"] = ["wide", 0]
        graph["wide"] = {"class_type": "EmptyLatentImage",
                         "inputs": {"width": 2048, "height": 1024, "batch_size": 1}}
        host.reset_cache()  # every render executes: nothing may come from ComfyUI's cache
        result = host.run(graph)
        ran = {ids["ksampler"], ids["save"]} | ({ids["patch"]} if model_patch else set())
        assert ran <= result.executed, f"not executed: {ran - result.executed}"
        return host.saved_images(result, ids["save"])[0]

    plain = render(None)
    fused = render(FUSION)
    fused_again = render(FUSION)
    other_seed = render((FUSION[0], {**FUSION[1], "jitter_seed": 1}))
    assert plain.shape == fused.shape == (1024, 2048, 3)
    assert np.abs(plain.astype(int) - fused.astype(int)).mean() > 0.1, "windows must change the result"
    assert np.array_equal(fused, fused_again), "same jitter seed reproduces"
    assert not np.array_equal(fused, other_seed), "the jitter seed moves the windows"


def test_weight_patches_keep_their_keys(host):
    """A LoRA-style weight patch on a self-attention projection still applies under the fusion patch."""
    import comfy.model_management
    import torch

    fixture = host.module_of("UltraResTest_TinyCheckpoint")
    model = fixture.tiny_models.tiny_unet("sdxl", seed=0)
    fused = host.node_classes["UltraRes_FreeScaleScaleFusion"].execute(
        model, fast_mode=False, start_percent=0.0, end_percent=1.0, jitter_seed=0, jitter=True).result[0]
    key = next(k for k in fused.model_state_dict() if k.endswith("attn1.to_q.weight"))
    assert ".inner." not in key, "parameter names are unchanged under the wrapper"
    original = model.model_state_dict()[key].clone()
    fused.add_patches({key: ("diff", (torch.ones_like(original),))}, 1.0)
    comfy.model_management.load_models_gpu([fused], force_full_load=True)
    try:
        module_path = key[: -len(".to_q.weight")]
        wrapper = fused.get_model_object(module_path)
        assert type(wrapper).__name__ == "ScaleFusionAttention"
        torch.testing.assert_close(wrapper.inner.to_q.weight, original + 1.0)
    finally:
        fused.unpatch_model()
    torch.testing.assert_close(model.model_state_dict()[key], original)
