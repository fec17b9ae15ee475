"""Hygiene of the shipped workflows: format, schema match, fixed seeds, public file names, thumbnails."""
from __future__ import annotations

import json

import pytest

from harness.pack import WORKFLOWS
from harness.workflow_format import VIRTUAL_NODES, is_ui_workflow, widget_layout

# The file names the public model releases use (what users have after following the README).
PUBLIC_MODEL_FILES = {
    "ckpt_name": {"sd_xl_base_1.0.safetensors", "sd_xl_refiner_1.0.safetensors",
                  "v1-5-pruned-emaonly.safetensors", "stable_cascade_stage_c.safetensors",
                  "stable_cascade_stage_b.safetensors", "sd3.5_large_fp8_scaled.safetensors"},
    "unet_name": {"stable_cascade_stage_c.safetensors", "stable_cascade_stage_b.safetensors",
                  "stage_c_bf16.safetensors", "stage_b_bf16.safetensors", "flux1-dev.safetensors",
                  "flux2_dev_fp8mixed.safetensors", "qwen_image_fp8_e4m3fn.safetensors",
                  "z_image_turbo_bf16.safetensors"},
    "clip_name": {"model.safetensors", "clip_g.safetensors", "mistral_3_small_flux2_bf16.safetensors",
                  "qwen_2.5_vl_7b_fp8_scaled.safetensors", "qwen_3_4b.safetensors"},
    "clip_name1": {"clip_l.safetensors"},
    "clip_name2": {"t5xxl_fp16.safetensors"},
    "vae_name": {"stage_a.safetensors", "sdxl_vae.safetensors", "ae.safetensors", "flux2-vae.safetensors",
                 "qwen_image_vae.safetensors"},
    "ultrapixel_name": {"ultrapixel_t2i.safetensors"},
}


def real_nodes(workflow):
    return [n for n in workflow["nodes"] if n["type"] not in VIRTUAL_NODES]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_hygiene(host, path):
    workflow = json.loads(path.read_text())
    assert is_ui_workflow(workflow) and workflow.get("version", 0) >= 0.4, "UI format as the frontend saves it"
    assert path.with_suffix(".jpg").is_file(), "a same-name .jpg thumbnail for the Templates browser"
    for node in real_nodes(workflow):
        layout = widget_layout(host.node_classes[node["type"]])
        values = node.get("widgets_values") or []
        assert len(values) == sum(1 + (extra is not None) for _, widget, extra in layout if widget), \
            f"{node['type']}: widgets_values do not match the node's current inputs"
        cursor = 0
        for name, widget, extra in layout:
            if not widget:
                continue
            value = values[cursor]
            if extra == "control":
                assert values[cursor + 1] == "fixed", f"{node['type']}.{name} must be a fixed seed"
            if name in PUBLIC_MODEL_FILES:
                assert value in PUBLIC_MODEL_FILES[name], f"{node['type']}.{name}={value!r} is not a public file name"
            cursor += 1 + (extra is not None)


LOADERS = {"CheckpointLoaderSimple", "UNETLoader", "CLIPLoader", "DualCLIPLoader", "VAELoader",
           "UltraRes_UltraPixelLoader"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_loader_says_where_to_download_its_file(host, path):
    """The frontend offers a download for a missing file from the loader's ``properties.models``."""
    import folder_paths

    for node in real_nodes(json.loads(path.read_text())):
        if node["type"] not in LOADERS:
            continue
        models = node.get("properties", {}).get("models")
        assert models, f"{node['type']} (node {node['id']}) has no properties.models"
        files = [v for v in node["widgets_values"] if isinstance(v, str) and v.endswith(".safetensors")]
        assert [entry["name"] for entry in models] == files, "one entry per file the loader loads, in order"
        for entry in models:
            assert entry["url"].startswith("https://huggingface.co/") and entry["url"].endswith("/" + entry["name"])
            assert entry["directory"] in folder_paths.folder_names_and_paths, f"unknown folder {entry['directory']!r}"
