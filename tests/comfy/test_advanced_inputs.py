"""Expert-only inputs go behind the frontend's "show advanced" where ComfyUI supports it.

ComfyUI 0.33+ takes ``advanced=True`` on V3 inputs; 0.3.75 (the CI pin) raises TypeError on it.
``nodes/_schema.py`` passes it only where every widget input class accepts it. These tests run on
the real host's node classes: every node builds its schema on this host, and the inputs the helper
marks are exactly the expert list below (on a host without the parameter, the helper's keyword
arguments are swapped for a harmless marker to see which inputs receive them).
"""
from __future__ import annotations

import inspect
import sys

import pytest

PIXELSMITH = {"band", "patch_batch", "crop_conditioning", "state_device", "positions"}
ULTRAPIXEL_SAMPLING = {"cfg_rescale", "shift", "lr_size"}

# Node id -> its expert-only inputs; every other input (and every other node) stays in the default view.
EXPERT_INPUTS = {
    "UltraRes_FreeScaleSelfCascadeSampler": {"cosine_scale_bg"},
    "UltraRes_FreeScaleUpscale": {"cosine_scale_bg", "dilation", "freeu"},
    "UltraRes_FreeScaleScaleFusion": {"start_percent", "end_percent", "jitter_seed", "jitter"},
    "UltraRes_SaveLargeImage": {"tiff_compression", "tile_size", "overlap"},
    "UltraRes_PixelsmithSampler": PIXELSMITH,
    "UltraRes_PixelsmithUpscale": PIXELSMITH,
    "UltraRes_UltraPixelLRGuidance": ULTRAPIXEL_SAMPLING,
    "UltraRes_UltraPixelStageC": ULTRAPIXEL_SAMPLING,
    "UltraRes_UltraPixelApply": {"cfg_rescale"},
    "UltraRes_UltraPixelLoader": {"weight_dtype"},
}
MARK = "ultrares-advanced-marker"


def pack_nodes(host) -> dict[str, type]:
    return {node_id: cls for node_id, cls in host.node_classes.items() if node_id.startswith("UltraRes_")}


def schema_module(host):
    """The host's own ``nodes/_schema.py`` (the module the registered node classes call)."""
    return sys.modules[host.module_of("UltraRes_SaveLargeImage").advanced.__module__]


def test_helper_detects_the_parameter_of_this_host(host):
    from comfy_api.latest import io

    module = schema_module(host)
    supported = "advanced" in inspect.signature(io.Input.__init__).parameters
    assert module.takes_advanced() == supported
    assert module.advanced() == ({"advanced": True} if supported else {})
    if not supported:  # why the detection is needed: this ComfyUI refuses the keyword
        with pytest.raises(TypeError):
            io.Float.Input("x", advanced=True)


def test_every_node_builds_its_schema_on_this_host(host):
    nodes = pack_nodes(host)
    assert set(EXPERT_INPUTS) <= set(nodes)
    for node_id, cls in nodes.items():
        assert cls.GET_SCHEMA().node_id == node_id
        info = cls.INPUT_TYPES()
        if not schema_module(host).takes_advanced():
            for group in info.values():
                for name, spec in group.items():
                    options = spec[1] if isinstance(spec, tuple) and len(spec) > 1 else {}
                    assert "advanced" not in options, f"{node_id}.{name}"


def test_exactly_the_expert_inputs_are_marked_advanced(host, monkeypatch):
    module = schema_module(host)
    if module.takes_advanced():
        def is_marked(item):
            return item.as_dict().get("advanced") is True
    else:  # no such parameter here: mark the inputs that receive the helper's keywords instead
        monkeypatch.setattr(module, "ADVANCED_KWARGS", {"display_name": MARK})

        def is_marked(item):
            return item.display_name == MARK
    for node_id, cls in pack_nodes(host).items():
        marked = {item.id for item in cls.GET_SCHEMA().inputs if is_marked(item)}
        assert marked == EXPERT_INPUTS.get(node_id, set()), node_id
