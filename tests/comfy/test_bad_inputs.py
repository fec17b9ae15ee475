"""Bad input through the real executor: every refusal names the input and leaves nothing behind.

Each case is a real graph (tiny models from ComfyUI's classes) with one thing wrong, as a user or
an API client could send it: non-finite numbers, out-of-range sizes and steps, unreadable strings,
a VAE or latent from another model family, file names outside or without a name. The run must fail
with the pack's own message, which starts with the name of the input at fault, before any work:
no file appears in the output folder and no input tensor is changed. Faults while writing (disk
full, interrupt) are in the second half. Damaged weight files are in ``test_bad_weights.py``.
"""
from __future__ import annotations

import dataclasses
import errno
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.comfy_host import WorkflowError
from harness.ultrapixel_graphs import cascade, graph_builder, sampling

NAN, INF = float("nan"), float("inf")


def sdxl(g):
    """Tiny SDXL-class checkpoint: (model, positive, negative, vae) outputs."""
    ckpt = g.node("UltraResTest_TinyCheckpoint", kind="sdxl", seed=0)
    pos = g.node("CLIPTextEncode", clip=ckpt.out(1), text="a lighthouse")
    neg = g.node("CLIPTextEncode", clip=ckpt.out(1), text="blurry")
    return ckpt.out(0), pos.out(0), neg.out(0), ckpt.out(2)


def flux(g):
    """Tiny Flux-class model (16-channel latents): (model, positive, negative)."""
    f = g.node("UltraResTest_TinyFlux", seed=0)
    return f.out(0), f.out(1), f.out(2)


def vae16(g):
    return g.node("UltraResTest_TinyVAE", channels="16", seed=0).out(0)


def latent(g, channels=4, size=64):
    return g.node("UltraResTest_SeededLatent", width=size, height=size, batch=1, seed=3, channels=channels).out(0)


PIXELSMITH = dict(scale_by=2.0, target_width=0, target_height=0, seed=1, steps=2, cfg=5.0, slider=1, patch_size=64,
                  band=16, mode="faithful", patch_batch=0, crop_conditioning="fixed", state_device="auto",
                  decode_image=False)


def pixelsmith(family="sdxl", vae="own", source_channels=4, **overrides):
    g = graph_builder()
    if family == "flux":
        model, pos, neg = flux(g)
        own_vae = None
    else:
        model, pos, neg, own_vae = sdxl(g)
    chosen = {"own": lambda: own_vae, "16": lambda: vae16(g), "sdxl": lambda: sdxl(g)[3]}[vae]()
    node = g.node("UltraRes_PixelsmithUpscale", model=model, vae=chosen, positive=pos, negative=neg,
                  latent=latent(g, source_channels), **{**PIXELSMITH, **overrides})
    g.node("UltraResTest_RecordLatent", samples=node.out(0), tag="bad_input")
    return g.finalize()


FREESCALE = dict(resolutions="128", seed=1, steps=3, cfg=5.0, cosine_scale=2.0, cosine_scale_bg=1.0,
                 fast_mode=False, dilation=True, freeu=True)


def freescale(vae="own", family="sdxl", **overrides):
    g = graph_builder()
    if family == "sd3":
        dit = g.node("UltraResTest_TinyDiT", kind="sd3", seed=0)
        model, pos, neg = dit.out(0), dit.out(1), dit.out(2)
    else:
        model, pos, neg, own = sdxl(g)
    chosen = vae16(g) if vae == "16" else sdxl(g)[3]
    node = g.node("UltraRes_FreeScaleUpscale", model=model, vae=chosen, positive=pos, negative=neg,
                  latent=latent(g, 16 if family == "sd3" else 4), **{**FREESCALE, **overrides})
    g.node("UltraResTest_RecordLatent", samples=node.out(0), tag="bad_input")
    return g.finalize()


def model_patch(node_id: str, **inputs):
    """A MODEL-patch node on the tiny SDXL model, its output sampled by a KSampler."""
    g = graph_builder()
    model, pos, neg, _ = sdxl(g)
    patched = g.node(node_id, model=model, **inputs)
    ks = g.node("KSampler", model=patched.out(0), positive=pos, negative=neg, latent_image=latent(g), seed=1,
                steps=1, cfg=5.0, sampler_name="euler", scheduler="normal", denoise=1.0)
    g.node("UltraResTest_RecordLatent", samples=ks.out(0), tag="bad_input")
    return g.finalize()


def node_output(node_id: str, family: str = "sdxl", **inputs):
    """A node without a MODEL input (a SAMPLER maker), its output used by SamplerCustomAdvanced on a
    4-channel latent."""
    g = graph_builder()
    model, pos, neg = flux(g) if family == "flux" else sdxl(g)[:3]
    sampler = g.node(node_id, **inputs)
    sigmas = g.node("BasicScheduler", model=model, scheduler="ddim_uniform", steps=2, denoise=1.0)
    guider = g.node("CFGGuider", model=model, positive=pos, negative=neg, cfg=5.0)
    sca = g.node("SamplerCustomAdvanced", noise=g.node("RandomNoise", noise_seed=1).out(0), guider=guider.out(0),
                 sampler=sampler.out(0), sigmas=sigmas.out(0), latent_image=latent(g))
    g.node("UltraResTest_RecordLatent", samples=sca.out(0), tag="bad_input")
    return g.finalize()


SELF_CASCADE = dict(cosine_scale=2.0, restart_percent=0.3, cosine_scale_bg=1.0)
SAMPLER = {k: PIXELSMITH[k] for k in ("slider", "patch_size", "band", "mode", "patch_batch", "crop_conditioning",
                                      "state_device")}
FUSION = dict(fast_mode=False, start_percent=0.0, end_percent=1.0, jitter_seed=0, jitter=True)


def stage_c(image_vae: str | None = None, **overrides):
    """UltraPixel Stage C on the tiny Stable Cascade; ``image_vae``: an LR image with that VAE."""
    g = graph_builder()
    tc, pos, neg = cascade(g)
    upm = g.node("UltraResTest_TinyUltraPixel", seed=0, zero_output=False)
    extra = {}
    if image_vae is not None:
        extra["image"] = g.node("EmptyImage", width=256, height=256, batch_size=1, color=0x808080).out(0)
        vaes = {"sdxl": lambda: sdxl(g)[3], "stage_a": lambda: g.node("UltraResTest_TinyStageA", seed=0).out(0),
                "none": lambda: None}
        if vaes[image_vae]() is not None:
            extra["vae"] = vaes[image_vae]()
    sc = g.node("UltraRes_UltraPixelStageC", model=tc.out(0), ultrapixel_model=upm.out(0), positive=pos.out(0),
                negative=neg.out(0), batch_size=1, **{**sampling(), **overrides}, **extra)
    g.node("UltraResTest_RecordLatent", samples=sc.out(0), tag="bad_input")
    return g.finalize()


def ultrapixel_apply(**overrides):
    g = graph_builder()
    tc, pos, neg = cascade(g)
    upm = g.node("UltraResTest_TinyUltraPixel", seed=0, zero_output=False)
    guide = g.node("UltraRes_UltraPixelLRGuidance", model=tc.out(0), positive=pos.out(0), negative=neg.out(0),
                   **{**sampling(), **{k: v for k, v in overrides.items() if k != "cfg_rescale_apply"}})
    apply = g.node("UltraRes_UltraPixelApply", model=tc.out(0), ultrapixel_model=upm.out(0), guidance=guide.out(0),
                   cfg_rescale=overrides.get("cfg_rescale_apply", 0.7))
    ks = g.node("KSampler", model=apply.out(0), positive=pos.out(0), negative=neg.out(0),
                latent_image=guide.out(1), seed=1, steps=1, cfg=4.0, sampler_name="euler", scheduler="simple",
                denoise=1.0)
    g.node("UltraResTest_RecordLatent", samples=ks.out(0), tag="bad_input")
    return g.finalize()


LARGE = dict(filename_prefix="bad_input/large", format="png", tiff_compression="deflate", tile_size=128, overlap=32)


def save_large(channels=4, **overrides):
    g = graph_builder()
    vae = sdxl(g)[3]
    g.node("UltraRes_SaveLargeImage", samples=latent(g, channels, size=128), vae=vae, **{**LARGE, **overrides})
    return g.finalize()


def not_finite(name: str, value: str) -> str:
    """The pack's refusal of a non-finite ``name``, or ComfyUI's own range check (which catches ±inf)."""
    return rf"({name}: {value} is not a finite number|Value {value} (bigger|smaller) than (max|min) of .*: {name})"


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    graph: Callable[[], dict]
    match: str  # regex the failure must contain; starts with the input's name


CASES = [
    # Non-finite numbers, as an API client can send them (ComfyUI's min/max check lets NaN through).
    Case("freescale-cosine_scale-nan", lambda: freescale(cosine_scale=NAN), not_finite("cosine_scale", "nan")),
    Case("freescale-cosine_scale_bg-inf", lambda: freescale(cosine_scale_bg=INF), not_finite("cosine_scale_bg", "inf")),
    Case("freescale-cfg-nan", lambda: freescale(cfg=NAN), not_finite("cfg", "nan")),
    Case("self-cascade-restart-nan", lambda: node_output("UltraRes_FreeScaleSelfCascadeSampler",
                                                         **{**SELF_CASCADE, "restart_percent": NAN}),
         not_finite("restart_percent", "nan")),
    Case("self-cascade-cosine-neg-inf", lambda: node_output("UltraRes_FreeScaleSelfCascadeSampler",
                                                            **{**SELF_CASCADE, "cosine_scale": -INF}),
         not_finite("cosine_scale", "-inf")),
    Case("scale-fusion-start-nan", lambda: model_patch("UltraRes_FreeScaleScaleFusion",
                                                       **{**FUSION, "start_percent": NAN}),
         not_finite("start_percent", "nan")),
    Case("dilation-percent-nan", lambda: model_patch("UltraRes_FreeScaleRestrainedDilation", dilate_percent=NAN,
                                                     base_size=64),
         not_finite("dilate_percent", "nan")),
    Case("pixelsmith-scale_by-nan", lambda: pixelsmith(scale_by=NAN), not_finite("scale_by", "nan")),
    Case("pixelsmith-cfg-inf", lambda: pixelsmith(cfg=INF), not_finite("cfg", "inf")),
    Case("stage-c-cfg_rescale-nan", lambda: stage_c(cfg_rescale=NAN), not_finite("cfg_rescale", "nan")),
    Case("stage-c-shift-inf", lambda: stage_c(shift=INF), not_finite("shift", "inf")),
    Case("stage-c-cfg-nan", lambda: stage_c(cfg=NAN), not_finite("cfg", "nan")),
    Case("lr-guidance-cfg-nan", lambda: ultrapixel_apply(cfg=NAN), not_finite("cfg", "nan")),
    Case("apply-cfg_rescale-nan", lambda: ultrapixel_apply(cfg_rescale_apply=NAN), not_finite("cfg_rescale", "nan")),
    # Sizes, steps and strings.
    Case("freescale-resolutions-word", lambda: freescale(resolutions="2048, big"), r"resolutions: cannot read 'big'"),
    Case("freescale-resolutions-empty", lambda: freescale(resolutions=" , "), r"resolutions: give at least one"),
    Case("freescale-resolutions-odd", lambda: freescale(resolutions="130"), r"resolutions: '130' must be positive"),
    Case("freescale-resolutions-ram", lambda: freescale(resolutions="262144"),
         r"resolutions: the stage 64x64 -> 262144x262144 px needs about .* of RAM"),
    Case("freescale-steps-1000", lambda: freescale(steps=1000), r"steps: 1000 is outside 1\.\.999"),
    Case("pixelsmith-target-ram", lambda: pixelsmith(target_width=131072, target_height=131072),
         r"scale_by / target size: the stage 64x64 -> 131072x131072 px needs about .* of RAM"),
    Case("pixelsmith-steps-1000", lambda: pixelsmith(steps=1000), r"steps: 1000 is outside 1\.\.999"),
    Case("pixelsmith-band-half-patch", lambda: pixelsmith(band=512, patch_size=1024),
         r"band: 512 px must be at least 0 and below half the patch side \(1024 px\)"),
    Case("pixelsmith-band-clamped-patch", lambda: pixelsmith(band=64, patch_size=1024),
         r"band: 64 px must be .* \(128 px: patch_size 1024 is clamped to the 128x128 picture\), i\.e\. at most "
         r"56 px"),
    Case("pixelsmith-patch-off-the-cells", lambda: pixelsmith(patch_size=1020),
         r"patch_size: 1020 px must be a whole number of this model's 8 px latent cells .* e\.g\. 1024 px"),
    Case("sampler-band-half-patch", lambda: node_output("UltraRes_PixelsmithSampler", **{**SAMPLER, "band": 32}),
         r"band: 32 px must be at least 0 and below half the patch side \(64 px\)"),
    Case("sampler-flux-4ch-latent", lambda: node_output("UltraRes_PixelsmithSampler", family="flux", **SAMPLER),
         r"latent_image: the latent has 4 channels, the model works on 16"),
    Case("pixelsmith-steps-string", lambda: pixelsmith(steps="twenty"), r"steps"),
    Case("pixelsmith-mode-unknown", lambda: pixelsmith(mode="turbo"), r"mode"),
    Case("pixelsmith-seed-negative", lambda: pixelsmith(seed=-1), r"seed"),
    Case("stage-c-width-too-small", lambda: stage_c(width=32), r"width"),
    Case("loader-path-traversal", lambda: _loader("../../../etc/passwd"), r"ultrapixel_name"),
    # Model / VAE / latent families.
    Case("pixelsmith-flux-model-sdxl-vae", lambda: pixelsmith(family="flux", vae="sdxl", source_channels=4),
         r"vae: this VAE makes 4-channel latents but the model works on 16-channel latents"),
    Case("pixelsmith-sdxl-model-16ch-vae", lambda: pixelsmith(vae="16", source_channels=16),
         r"vae: this VAE makes 16-channel latents but the model works on 4-channel latents"),
    Case("pixelsmith-16ch-latent-4ch-vae", lambda: pixelsmith(source_channels=16),
         r"latent: the latent has 16 channels but this VAE decodes 4-channel latents"),
    Case("freescale-16ch-vae", lambda: freescale(vae="16"),
         r"vae: this VAE makes 16-channel latents but the model works on 4-channel latents"),
    Case("freescale-sd3-past-its-position-table", lambda: freescale(vae="16", family="sd3", resolutions="4096"),
         r"resolutions: FreeScale Upscale on SD3 / SD3.5: the model's learned position table covers 2048 px"),
    Case("stage-c-image-sdxl-vae", lambda: stage_c(image_vae="sdxl"),
         r"vae: this VAE makes 4-channel latents but the model works on 16-channel latents"),
    Case("stage-c-image-stage-a-vae", lambda: stage_c(image_vae="stage_a"), r"vae: this VAE makes 4-channel"),
    Case("stage-c-image-no-vae", lambda: stage_c(image_vae="none"), r"vae: an image as LR source needs"),
    Case("apply-on-sdxl", lambda: _apply_on_sdxl(), r"model: UltraPixel needs a Stable Cascade stage C"),
    Case("save-large-16ch-latent", lambda: save_large(channels=16),
         r"samples: the latent has 16 channels but this VAE decodes 4-channel latents"),
    # Output file names.
    Case("save-large-empty-prefix", lambda: save_large(filename_prefix=""), r"filename_prefix: '' gives no file name"),
    Case("save-large-dot-prefix", lambda: save_large(filename_prefix="."), r"filename_prefix: '\.' gives no"),
    Case("save-large-traversal", lambda: save_large(filename_prefix="../escaped/large"),
         r"filename_prefix: '\.\./escaped/large' points outside the output folder"),
    Case("save-large-absolute", lambda: save_large(filename_prefix="/tmp/ultrares_escaped/large"),
         r"filename_prefix: '/tmp/ultrares_escaped/large' points outside the output folder"),
    Case("save-large-overlap", lambda: save_large(overlap=128),
         r"overlap \(128 px\) must be in \[0, tile_size=128 px\)"),
    Case("save-large-tile-off-the-latent-cells", lambda: save_large(tile_size=100),
         r"tile_size: 100 px is not a whole number of this VAE's 8 px latent cells; use 96 px"),
]


def _loader(name):
    g = graph_builder()
    loader = g.node("UltraRes_UltraPixelLoader", ultrapixel_name=name, weight_dtype="default")
    g.node("UltraResTest_RecordUltraPixel", tag="loaded", ultrapixel_model=loader.out(0))
    return g.finalize()


def _apply_on_sdxl():
    g = graph_builder()
    model, pos, neg, _ = sdxl(g)
    tc, cpos, cneg = cascade(g)
    upm = g.node("UltraResTest_TinyUltraPixel", seed=0, zero_output=False)
    guide = g.node("UltraRes_UltraPixelLRGuidance", model=tc.out(0), positive=cpos.out(0), negative=cneg.out(0),
                   **sampling())
    apply = g.node("UltraRes_UltraPixelApply", model=model, ultrapixel_model=upm.out(0), guidance=guide.out(0),
                   cfg_rescale=0.7)
    ks = g.node("KSampler", model=apply.out(0), positive=pos, negative=neg, latent_image=latent(g), seed=1,
                steps=1, cfg=4.0, sampler_name="euler", scheduler="normal", denoise=1.0)
    g.node("UltraResTest_RecordLatent", samples=ks.out(0), tag="bad_input")
    return g.finalize()


def output_files(host) -> set[Path]:
    root = host.work_dir / "output"
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()}


def fixture_state(host):
    return host.module_of("UltraResTest_SeededLatent")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_by_name_and_leaves_nothing(host, case):
    fixtures = fixture_state(host)
    fixtures.LATENTS.pop("bad_input", None)
    before = output_files(host)
    with pytest.raises(WorkflowError, match=case.match) as failure:
        host.run(case.graph())
    message = str(failure.value)
    assert "weights_only=False" not in message
    assert "bad_input" not in fixtures.LATENTS, "nothing downstream ran"
    assert output_files(host) == before, "no file was written"
    assert not Path("/tmp/ultrares_escaped").exists()
    for source, copy in fixtures.SOURCES:
        assert torch.equal(source, copy), "an input latent was changed"


def test_case_count():
    """The suite covers at least 40 bad inputs (plus the write faults below and the weight files)."""
    assert len(CASES) >= 40


# --------------------------------------------------------------------------------------------- #
# Faults while writing
# --------------------------------------------------------------------------------------------- #


def test_unwritable_output_folder_is_named(host):
    blocker = host.work_dir / "output" / "blocked"
    blocker.write_bytes(b"a file where a folder should be")
    try:
        before = output_files(host)
        with pytest.raises(WorkflowError, match=r"filename_prefix: cannot create the folder for 'blocked/large'"):
            host.run(save_large(filename_prefix="blocked/large"))
        assert output_files(host) == before
    finally:
        blocker.unlink()


def test_disk_refusal_shows_the_margin(host, monkeypatch):
    import collections
    import shutil

    Usage = collections.namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 10**7, 10**7))
    with pytest.raises(WorkflowError, match=r"needs up to \d+ KiB disk \+ 64 MiB kept free \(9\.54 MiB free"):
        host.run(save_large(filename_prefix="bad_input/margin"))
    assert not list((host.work_dir / "output").rglob("margin*"))


@pytest.mark.parametrize("fault", ["disk-full", "interrupt"])
def test_fault_mid_write_leaves_no_file(host, monkeypatch, fault):
    """The disk fills up (ENOSPC) or the user cancels after the first rows: no file, no ``.part``."""
    import comfy.model_management

    module = host.module_of("UltraRes_SaveLargeImage")

    class FailingWriter(module.PngStreamWriter):
        def write_rows(self, rows):
            super().write_rows(rows)
            if fault == "disk-full":
                raise OSError(errno.ENOSPC, "No space left on device")
            comfy.model_management.interrupt_current_processing(True)

    monkeypatch.setattr(module, "PngStreamWriter", FailingWriter)
    prefix = f"bad_input/{fault}"
    before = output_files(host)
    graph = save_large(filename_prefix=prefix, tile_size=64, overlap=16)  # three rows of tiles
    if fault == "disk-full":
        with pytest.raises(WorkflowError, match=r"filename_prefix: cannot write .*No space left on device"):
            host.run(graph)
    else:
        with pytest.raises(InterruptedError):
            host.run(graph)
    assert output_files(host) == before, "neither the image nor its .part is left"

    monkeypatch.undo()
    host.reset_cache()
    result = host.run(graph)
    written = [Path(t) for t in result.outputs[next(iter(result.outputs))]["text"][1:]]
    assert len(written) == 1 and written[0].is_file(), "the next run writes the image"


def test_interrupt_mid_stage_then_rerun_is_identical(host):
    """Cancel a Pixelsmith stage after a few model calls: nothing is output, and the next run equals a clean one."""
    def graph(interrupt_calls: int):
        g = graph_builder()
        model, pos, neg, vae = sdxl(g)
        model = g.node("UltraResTest_InterruptAfter", model=model, calls=interrupt_calls).out(0)
        node = g.node("UltraRes_PixelsmithUpscale", model=model, vae=vae, positive=pos, negative=neg,
                      latent=latent(g), **{**PIXELSMITH, "steps": 3})
        g.node("UltraResTest_RecordLatent", samples=node.out(0), tag=f"stage_{interrupt_calls}")
        return g.finalize()

    fixtures = fixture_state(host)
    host.run(graph(0))
    clean = fixtures.LATENTS.pop("stage_0")
    fixtures.CALLS.clear()
    with pytest.raises(InterruptedError):
        host.run(graph(2))
    assert "stage_2" not in fixtures.LATENTS
    host.reset_cache()
    host.run(graph(0))
    assert torch.equal(fixtures.LATENTS.pop("stage_0"), clean)


# --------------------------------------------------------------------------------------------- #
# Schedules: exactly N leading steps for any N
# --------------------------------------------------------------------------------------------- #


def tiny_sdxl(host):
    return host.module_of("UltraResTest_TinyCheckpoint").tiny_models.tiny_unet("sdxl", 0)


@pytest.mark.parametrize("steps", [20, 24, 30, 50, 64])
def test_leading_sigmas_match_the_formula(host, steps):
    """``t_i = i·⌊1000/N⌋ + 1``: exactly N timesteps from (N−1)·⌊1000/N⌋ + 1 down to 1, then σ = 0."""
    stage = host.module_of("UltraRes_PixelsmithUpscale").stage
    model = tiny_sdxl(host)
    sampling_ = model.get_model_object("model_sampling")
    sigmas = stage.leading_sigmas(model, steps)
    assert len(sigmas) == steps + 1 and float(sigmas[-1]) == 0.0
    timesteps = [round(float(sampling_.timestep(s.reshape(1)))) for s in sigmas[:-1]]
    assert timesteps == [i * (1000 // steps) + 1 for i in reversed(range(steps))]


@pytest.mark.parametrize("node", ["pixelsmith", "freescale"])
def test_all_in_one_nodes_run_exactly_n_steps(host, node, monkeypatch):
    """At 6 steps (which does not divide 1000; ddim_uniform gives 7) each node calls the model on
    exactly the leading timesteps: 6 for Pixelsmith, 6 − int(0.3·6) = 5 for FreeScale, and the
    progress bar ends at the steps that ran."""
    import comfy.utils

    g = graph_builder()
    model, pos, neg, vae = sdxl(g)
    probe = g.node("UltraResTest_ModelProbe", model=model, tag="steps").out(0)
    if node == "pixelsmith":
        out = g.node("UltraRes_PixelsmithUpscale", model=probe, vae=vae, positive=pos, negative=neg,
                     latent=latent(g), **{**PIXELSMITH, "steps": 6, "patch_size": 128, "band": 16})
    else:
        out = g.node("UltraRes_FreeScaleUpscale", model=probe, vae=vae, positive=pos, negative=neg,
                     latent=latent(g), **{**FREESCALE, "steps": 6})
    g.node("UltraResTest_RecordLatent", samples=out.out(0), tag="steps")
    bars: list[tuple[int, int]] = []
    original = comfy.utils.ProgressBar.update_absolute

    def spy(self, value, total=None, preview=None):
        bars.append((value, total if total is not None else self.total))
        return original(self, value, total, preview)

    monkeypatch.setattr(comfy.utils.ProgressBar, "update_absolute", spy)
    records = host.module_of("UltraResTest_ModelProbe").PROBE_RECORDS
    records.clear()
    host.reset_cache()
    host.run(g.finalize())
    sampling_ = tiny_sdxl(host).get_model_object("model_sampling")
    timesteps = sorted({round(float(sampling_.timestep(r["sigmas"][:1]))) for r in records if r["tag"] == "steps"},
                       reverse=True)
    leading = [i * 166 + 1 for i in reversed(range(6))]
    expected = leading if node == "pixelsmith" else leading[1:]
    assert timesteps == expected
    if node == "freescale":
        assert bars[-1] == (5, 5), "the bar counts the steps that ran"
    assert np.isfinite(host.module_of("UltraResTest_SeededLatent").LATENTS["steps"].numpy()).all()
