"""Image px per latent cell come from what ComfyUI knows of the model, never an assumed 8."""
from __future__ import annotations

import types

import pytest


def stage_module(host):
    """The pack's ``nodes/_stage.py`` as ComfyUI loaded it (Pixelsmith Upscale imports it as ``stage``)."""
    return host.module_of("UltraRes_PixelsmithUpscale").stage


def with_format(latent_format) -> object:
    """A stand-in for a ``comfy.model_base`` model: only its latent format is read."""
    return types.SimpleNamespace(latent_format=latent_format)


def test_latent_px_and_packing_follow_the_latent_format(host):
    import comfy.latent_formats as formats

    stage = stage_module(host)
    for fmt, px, packing in [(formats.SD15(), 8, 1), (formats.SDXL(), 8, 1), (formats.SD3(), 8, 1),
                             (formats.Flux(), 8, 1), (formats.Wan21(), 8, 1), (formats.Flux2(), 16, 2)]:
        model = with_format(fmt)
        assert (stage.model_latent_px(model), stage.latent_packing(model)) == (px, packing), type(fmt).__name__
    # A ModelPatcher-like wrapper (``.model.latent_format``) reads the same.
    assert stage.model_latent_px(types.SimpleNamespace(model=with_format(formats.Flux2()))) == 16


def test_a_format_that_says_its_ratio_wins_and_unknown_formats_are_refused(host):
    import comfy.latent_formats as formats

    stage = stage_module(host)
    own = formats.SDXL()
    own.spacial_downscale_ratio = 4
    assert stage.model_latent_px(with_format(own)) == 4
    with pytest.raises(ValueError, match=r"^model: .*latent format SC_Prior"):
        stage.model_latent_px(with_format(formats.SC_Prior()))


def test_keep_detail_is_refused_on_packed_latents_only(host):
    """Both upscale nodes call this before resampling a latent: Flux.2's packed cells are refused by name."""
    stage = stage_module(host)
    dits = host.module_of("UltraResTest_TinyDiT")
    with pytest.raises(ValueError, match=r"^keep_detail: this model's latents are packed"):
        stage.check_keep_detail(dits.tiny_dit("flux2"), True)
    stage.check_keep_detail(dits.tiny_dit("flux2"), False)
    stage.check_keep_detail(dits.tiny_dit("qwen_image"), True)
