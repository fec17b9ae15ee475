"""FreeScale self-cascade sampler and the all-in-one FreeScale Upscale node on the real host."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch


def _base(g, kind, size, seed=2):
    ckpt = g.node("UltraResTest_TinyCheckpoint", kind=kind, seed=0)
    pos = g.node("CLIPTextEncode", clip=ckpt.out(1), text="a harbour town, detailed")
    neg = g.node("CLIPTextEncode", clip=ckpt.out(1), text="blurry")
    latent = g.node("EmptyLatentImage", width=size, height=size, batch_size=1)
    ks = g.node("KSampler", model=ckpt.out(0), positive=pos.out(0), negative=neg.out(0),
                latent_image=latent.out(0), seed=seed, steps=2, cfg=5.0, sampler_name="euler",
                scheduler="ddim_uniform", denoise=1.0)
    return ckpt, pos, neg, ks


def modular_graph(kind="sdxl", steps=4, sampler_inputs=None, mask_left_half=False, tag="cascade", noise_seed=9):
    """Stage 0 -> RGB upsample ×2 -> SamplerCustomAdvanced with the self-cascade SAMPLER."""
    from comfy_execution.graph_utils import GraphBuilder

    g = GraphBuilder(prefix="")
    ckpt, pos, neg, ks = _base(g, kind, 64)
    image = g.node("VAEDecode", samples=ks.out(0), vae=ckpt.out(2))
    up = g.node("ImageScale", image=image.out(0), upscale_method="bicubic", width=128, height=128, crop="disabled")
    x_up = g.node("VAEEncode", pixels=up.out(0), vae=ckpt.out(2))
    model = g.node("UltraResTest_FreeScaleProbe", model=ckpt.out(0), tag=tag, interrupt_at=0).out(0)
    inputs = {"cosine_scale": 2.0, "restart_percent": 0.3, "cosine_scale_bg": 1.0, **(sampler_inputs or {})}
    if mask_left_half:
        bg = g.node("SolidMask", value=0.0, width=128, height=128)
        fg = g.node("SolidMask", value=1.0, width=64, height=128)
        inputs["mask"] = g.node("MaskComposite", destination=bg.out(0), source=fg.out(0), x=0, y=0,
                                operation="add").out(0)
    sampler = g.node("UltraRes_FreeScaleSelfCascadeSampler", **inputs)
    sigmas = g.node("BasicScheduler", model=model, scheduler="ddim_uniform", steps=steps, denoise=1.0)
    guider = g.node("CFGGuider", model=model, positive=pos.out(0), negative=neg.out(0), cfg=5.0)
    noise = g.node("RandomNoise", noise_seed=noise_seed)
    sca = g.node("SamplerCustomAdvanced", noise=noise.out(0), guider=guider.out(0), sampler=sampler.out(0),
                 sigmas=sigmas.out(0), latent_image=x_up.out(0))
    dec = g.node("VAEDecode", samples=sca.out(0), vae=ckpt.out(2))
    save = g.node("SaveImage", images=dec.out(0), filename_prefix="ultrares_cascade")
    return g.finalize(), save.id


def upscale_graph(kind="sdxl", base=64, resolutions="128", seed=5, steps=3, probe_tag=None, interrupt_at=0,
                  base_from_sampler=True, **kw):
    """Stage 0 (KSampler, or an empty latent) -> FreeScale Upscale -> decode -> save."""
    from comfy_execution.graph_utils import GraphBuilder

    g = GraphBuilder(prefix="")
    ckpt, pos, neg, ks = _base(g, kind, base)
    latent = (ks.out(0) if base_from_sampler
              else g.node("EmptyLatentImage", width=base, height=base, batch_size=1).out(0))
    model = ckpt.out(0)
    if probe_tag:
        model = g.node("UltraResTest_FreeScaleProbe", model=model, tag=probe_tag, interrupt_at=interrupt_at).out(0)
    inputs = {"resolutions": resolutions, "seed": seed, "steps": steps, "cfg": 5.0, "cosine_scale": 2.0,
              "cosine_scale_bg": 1.0, "fast_mode": False, "dilation": True, "freeu": True, **kw}
    up = g.node("UltraRes_FreeScaleUpscale", model=model, vae=ckpt.out(2), positive=pos.out(0),
                negative=neg.out(0), latent=latent, **inputs)
    dec = g.node("VAEDecode", samples=up.out(0), vae=ckpt.out(2))
    save = g.node("SaveImage", images=dec.out(0), filename_prefix="ultrares_freescale_upscale")
    return g.finalize(), save.id, up.id


def check_restart_schedule(host, records, kind):
    g, save = modular_graph(kind=kind, steps=5, tag=f"restart-{kind}")
    img = host.saved_images(host.run(g), save)[0]
    assert img.shape == (128, 128, 3)
    calls = [r for r in records if r["tag"] == f"restart-{kind}"]
    # restart at int(0.3·5) = 1: steps 1..4 of the 5-step ddim_uniform schedule, one call each.
    import comfy.samplers

    ms = host_model_sampling(kind)
    expected = comfy.samplers.calculate_sigmas(ms, "ddim_uniform", 5)[1:-1]
    assert torch.allclose(torch.tensor([r["sigma"] for r in calls]), expected.float(), rtol=1e-5)


def test_sampler_restarts_on_the_given_schedule(host, records):
    check_restart_schedule(host, records, "sdxl")


def host_model_sampling(kind):
    import comfy.model_sampling
    import comfy.supported_models

    # The tiny models use the stock SD1.x/SDXL ε schedule (scaled-linear betas).
    return comfy.model_sampling.ModelSamplingDiscrete(comfy.supported_models.SDXL({"adm_in_channels": 2816})
                                                      if kind == "sdxl" else None)


def test_skip_residual_pins_to_renoised_x_up_and_mask_is_per_pixel(host, records):
    """cosine_scale 0 gives c1 = 1: every model input is exactly N_i = x_up + σ_i·n (times c_in).
    With a left-half mask (foreground exponent 50 ⇒ c1 ≈ 0, background 0 ⇒ c1 = 1) exactly the
    right half stays pinned to N_i and the left half is sampled freely."""
    g, _ = modular_graph(steps=4, sampler_inputs={"cosine_scale": 0.0}, tag="pinned")
    host.run(g)
    g, _ = modular_graph(steps=4, sampler_inputs={"cosine_scale": 50.0, "cosine_scale_bg": 0.0},
                         mask_left_half=True, tag="masked")
    host.run(g)
    pinned = [r["x"] for r in records if r["tag"] == "pinned"]
    masked = [r["x"] for r in records if r["tag"] == "masked"]
    assert len(pinned) == len(masked) == 3, "restart int(0.3·4) = 1: steps 1..3"
    assert torch.equal(pinned[0], masked[0]), "both start at N_r"
    left, right = slice(0, 8), slice(8, 16)  # 128 px mask -> 16 latent columns, binary, nearest
    for p, m in zip(pinned[1:], masked[1:]):
        assert torch.equal(m[..., right], p[..., right]), "background (exponent 0) pinned exactly"
        per_column = (m[..., left] - p[..., left]).abs().mean(dim=(0, 1, 2))
        assert (per_column > 1e-4).all(), "foreground (exponent 50) moves away from N_i in every column"


def test_upscale_two_stages_one_progress_bar_with_previews(host, records, monkeypatch):
    import comfy.utils
    from comfy.cli_args import LatentPreviewMethod, args

    progress = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK",
                        lambda value, total, preview, node_id=None: progress.append((value, total, preview)))
    monkeypatch.setattr(args, "preview_method", LatentPreviewMethod.Latent2RGB)
    # ComfyUI 0.33+ resets the method from the prompt's extra data to this default on every run.
    import latent_preview
    monkeypatch.setattr(latent_preview, "default_preview_method", LatentPreviewMethod.Latent2RGB, raising=False)
    check_two_stages(host, records, "sdxl")
    values = [v for v, t, _ in progress if t == 6]
    # One bar over both stages (total = all steps), rising to the end. ComfyUI 0.3.75 reports
    # every tick; newer versions may coalesce rapid updates, so only the order is required.
    assert len(values) >= 2 and values == sorted(set(values)) and values[-1] == 6, progress
    assert all(p is not None for v, t, p in progress if t == 6), "a preview at every step"


def check_two_stages(host, records, kind):
    g, save, node = upscale_graph(kind=kind, resolutions="128, 192x128", steps=4, probe_tag=f"up-{kind}")
    img = host.saved_images(host.run(g), save)[0]
    assert img.shape == (128, 192, 3), "WxH: 192 wide, 128 high"
    calls = [r for r in records if r["tag"] == f"up-{kind}"]
    # 4 steps, restart int(1.2) = 1 -> 3 calls per stage; stage latents 16×16 then 16×24.
    assert [tuple(r["x"].shape[-2:]) for r in calls] == [(16, 16)] * 3 + [(16, 24)] * 3
    # Base 64 px: d = 128 // 64 = 2, then 192 // 64 = 3, for the first round(0.7·4) = 3 steps,
    # i.e. the first 2 calls after the restart at step 1.
    assert [set(r["dilation"].values()) for r in calls] == [{2}, {2}, set(), {3}, {3}, set()]


def test_2048x1536_target_with_fusion_and_dilation(host, records):
    """The paper's patch set at a non-square 2048×1536 target, 2 steps, VAE-free to stay cheap."""
    from comfy_execution.graph_utils import GraphBuilder

    g = GraphBuilder(prefix="")
    ckpt = g.node("UltraResTest_TinyCheckpoint", kind="sdxl", seed=0)
    pos = g.node("CLIPTextEncode", clip=ckpt.out(1), text="a harbour town, detailed")
    neg = g.node("CLIPTextEncode", clip=ckpt.out(1), text="blurry")
    model = g.node("UltraRes_FreeScaleScaleFusion", model=ckpt.out(0), fast_mode=False, start_percent=0.0,
                   end_percent=1.0, jitter_seed=0, jitter=True).out(0)
    model = g.node("UltraRes_FreeScaleRestrainedDilation", model=model, dilate_percent=1.0, base_size=1024).out(0)
    model = g.node("UltraResTest_FreeScaleProbe", model=model, tag="big", interrupt_at=0).out(0)
    x_up = g.node("EmptyLatentImage", width=2048, height=1536, batch_size=1)
    sampler = g.node("UltraRes_FreeScaleSelfCascadeSampler", cosine_scale=2.0, restart_percent=0.75,
                     cosine_scale_bg=1.0)
    sigmas = g.node("BasicScheduler", model=model, scheduler="ddim_uniform", steps=4, denoise=1.0)
    guider = g.node("CFGGuider", model=model, positive=pos.out(0), negative=neg.out(0), cfg=1.0)  # no uncond pass
    sca = g.node("SamplerCustomAdvanced", noise=g.node("RandomNoise", noise_seed=1).out(0), guider=guider.out(0),
                 sampler=sampler.out(0), sigmas=sigmas.out(0), latent_image=x_up.out(0))
    small = g.node("LatentUpscaleBy", samples=sca.out(0), upscale_method="area", scale_by=0.0625)
    dec = g.node("VAEDecode", samples=small.out(0), vae=ckpt.out(2))
    g.node("SaveImage", images=dec.out(0), filename_prefix="ultrares_2048x1536")
    host.run(g.finalize())
    # One step: restart int(0.75·4) = 3 of 4, dilated with d = 2048 // 1024 (width only).
    assert [tuple(r["x"].shape[-2:]) for r in records] == [(192, 256)]
    assert [set(r["dilation"].values()) for r in records] == [{2}]


def test_upscale_seeded_interruptible_and_tiled(host, records, monkeypatch):
    g, save, node = upscale_graph(seed=11, probe_tag="a")
    a = host.saved_images(host.run(g), save)[0]
    g, save, _ = upscale_graph(seed=12, probe_tag="a")
    c = host.saved_images(host.run(g), save)[0]
    assert not np.array_equal(a, c), "another seed changes the stage noise"

    g, save, _ = upscale_graph(seed=11, probe_tag="stopped", interrupt_at=2)
    with pytest.raises(InterruptedError):
        host.run(g)
    assert records[-1]["tag"] == "stopped" and records[-1]["dilation"], "stopped inside a dilated call"

    g, save, _ = upscale_graph(seed=11, probe_tag="b")
    result = host.run(g)
    assert node in result.executed, "re-executed, not served from the cache"
    assert np.array_equal(a, host.saved_images(result, save)[0]), \
        "same seed reproduces; no patch survived the interrupt"

    # Tiled VAE path (used above 2048² px), forced on a small image: runs, close to the untiled result.
    module = host.module_of("UltraRes_FreeScaleUpscale")
    monkeypatch.setattr(module, "TILING", dataclasses.replace(module.TILING, decode_above_px=32 * 32,
                                                              encode_above_px=32 * 32))
    g, save, _ = upscale_graph(seed=11, probe_tag="tiled")
    tiled = host.saved_images(host.run(g), save)[0]
    assert tiled.shape == a.shape and not np.array_equal(tiled, a)


def test_invalid_resolutions_named(host):
    from harness.comfy_host import WorkflowError

    g, _, _ = upscale_graph(resolutions="2048, big")
    with pytest.raises(WorkflowError, match="resolutions"):
        host.run(g)
    g, _, _ = upscale_graph(resolutions="130")
    with pytest.raises(WorkflowError, match="multiples of 8"):
        host.run(g)


def test_freeu_that_would_do_nothing_is_reported(host, records, caplog):
    """ComfyUI's FreeU scales only output blocks 4× and 2× the base width wide; a UNet without
    them (the tiny one: widths 1×, 2×) gets a warning instead of a silent no-op; SDXL does not."""
    import logging
    import types

    module = host.module_of("UltraRes_FreeScaleUpscale")
    sdxl = types.SimpleNamespace(model=types.SimpleNamespace(model_config=types.SimpleNamespace(
        unet_config={"model_channels": 320, "channel_mult": [1, 2, 4]})))
    assert module.freeu_widths(sdxl) == ([1280, 640], [])
    g, _, _ = upscale_graph(seed=3, probe_tag="freeu")
    with caplog.at_level(logging.WARNING):
        host.run(g)
    warned = [r.getMessage() for r in caplog.records if "FreeU" in r.getMessage()]
    assert warned and "only part of its work" in warned[0], warned


def test_sd15_class_model(host, records):
    """Last in the file, so the tiny models are built once each: the same checks on SD1.5-class."""
    check_restart_schedule(host, records, "sd15")
    check_two_stages(host, records, "sd15")


def test_keep_detail_changes_only_the_low_band_of_the_stage_start(host, records):
    """keep_detail off is the default (bit-identical); on, with the same seed, the stage starts
    from the same noise and an x_up that differs from the paper's by a smooth field only (the
    source latent's low band), and it is reproducible."""
    from kornia.filters import gaussian_blur2d

    images = {}
    for name, extra in (("default", {}), ("off", {"keep_detail": False}), ("on", {"keep_detail": True}),
                        ("on again", {"keep_detail": True})):
        g, save, _ = upscale_graph(seed=4, probe_tag=f"kd-{name}", cosine_scale=0.0, **extra)
        images[name] = host.saved_images(host.run(g), save)[0]
    assert np.array_equal(images["default"], images["off"])
    assert np.array_equal(images["on"], images["on again"]) and not np.array_equal(images["on"], images["off"])
    first = {name: next(r["x"] for r in records if r["tag"] == f"kd-{name}") for name in ("off", "on")}
    diff = first["on"] - first["off"]  # c_in·G(up(source) − x_up): the noise cancels
    smooth = gaussian_blur2d(diff, (7, 7), (1.0, 1.0), border_type="replicate")
    assert diff.abs().mean() > 1e-3, "the start changed"
    assert (diff - smooth).abs().mean() < 0.3 * diff.abs().mean(), "only the low band changed"
