"""Write the DiT template workflows ``example_workflows/<name>.json`` from the compact graphs below.

    python scripts/make_dit_workflows.py [--comfyui DIR]     # host venv python

Each graph names its nodes, their widget values (by input name) and their links; the node classes of a
real ComfyUI host give the input order, the widget layout and the output types, so the files are what
the frontend saves. Thumbnails: ``scripts/make_thumbnails.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path

# The one path set-up of this entry point: the harness package lives in tests/harness.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from harness.comfy_host import FIXTURE_PACK, PACK_ROOT, ComfyHost  # noqa: E402
from harness.pack import WORKFLOW_DIR  # noqa: E402
from harness.workflow_format import widget_layout  # noqa: E402

HF = "https://huggingface.co"
FLUX_FILES = {
    "flux1-dev.safetensors": (f"{HF}/black-forest-labs/FLUX.1-dev/resolve/main/flux1-dev.safetensors",
                              "diffusion_models"),
    "clip_l.safetensors": (f"{HF}/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors",
                           "text_encoders"),
    "t5xxl_fp16.safetensors": (f"{HF}/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors",
                               "text_encoders"),
    "ae.safetensors": (f"{HF}/black-forest-labs/FLUX.1-dev/resolve/main/ae.safetensors", "vae"),
}
FLUX_NOTE = (
    "## Model files\n| file | folder | download |\n|---|---|---|\n"
    "| `flux1-dev.safetensors` | `models/diffusion_models/` | [black-forest-labs/FLUX.1-dev](https://huggingface.co/"
    "black-forest-labs/FLUX.1-dev) (gated: accept its licence) |\n"
    "| `clip_l.safetensors`, `t5xxl_fp16.safetensors` | `models/text_encoders/` | [comfyanonymous/flux_text_encoders]"
    "(https://huggingface.co/comfyanonymous/flux_text_encoders) |\n"
    "| `ae.safetensors` | `models/vae/` | [black-forest-labs/FLUX.1-dev](https://huggingface.co/black-forest-labs/"
    "FLUX.1-dev) |\n\n"
    "Flux dev is guidance-distilled: cfg 1 everywhere, the guidance comes from FluxGuidance (3.5). Pixelsmith "
    "runs each 1024 px patch at local positions (its measured default); two ×2 stages at 28 steps take "
    "231 + 1023 patch calls in faithful mode, 252 + 700 patches batched several to a call in fast mode. "
    "UltraRes itself never downloads anything.")
PROMPT = "A medieval harbour town at dawn, fishing boats, stone houses, intricate details, sharp focus, 8k photograph"
SEED = 123

# name -> nodes: (id, type, title, widget values by input name, links {input: (source id, output slot)})
WORKFLOWS = {
    "Pixelsmith upscale - Flux.1 dev 1024 to 4K (4096 px), two x2 stages": [
        (1, "UNETLoader", "Load Flux.1 dev (models/diffusion_models)",
         {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"}, {}),
        (2, "DualCLIPLoader", "Load CLIP-L + T5-XXL (models/text_encoders)",
         {"clip_name1": "clip_l.safetensors", "clip_name2": "t5xxl_fp16.safetensors", "type": "flux",
          "device": "default"}, {}),
        (3, "VAELoader", "Load the Flux VAE (models/vae)", {"vae_name": "ae.safetensors"}, {}),
        (4, "CLIPTextEncode", "Prompt", {"text": PROMPT}, {"clip": (2, 0)}),
        (5, "FluxGuidance", "Guidance 3.5", {"guidance": 3.5}, {"conditioning": (4, 0)}),
        (6, "CLIPTextEncode", "Negative (unused at cfg 1)", {"text": ""}, {"clip": (2, 0)}),
        (7, "EmptySD3LatentImage", "1024² base", {"width": 1024, "height": 1024, "batch_size": 1}, {}),
        (8, "KSampler", "Stage 0: Flux dev 1024² (28 steps, cfg 1)",
         {"seed": SEED, "steps": 28, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0},
         {"model": (1, 0), "positive": (5, 0), "negative": (6, 0), "latent_image": (7, 0)}),
        *[(9 + i, "UltraRes_PixelsmithUpscale", f"Pixelsmith ×2 → {2048 * 2 ** i}²",
           {"scale_by": 2.0, "target_width": 0, "target_height": 0, "seed": SEED, "steps": 28, "cfg": 1.0,
            "slider": -1, "patch_size": 128, "band": 10, "mode": "fast", "patch_batch": 0,
            "crop_conditioning": "fixed", "state_device": "auto", "decode_image": i == 1, "keep_detail": False,
            "positions": "local"},
           {"model": (1, 0), "vae": (3, 0), "positive": (5, 0), "negative": (6, 0), "latent": (8 + i, 0)})
          for i in range(2)],
        (11, "SaveImage", "Save the 4096² image", {"filename_prefix": "ultrares/pixelsmith_flux_4096"},
         {"images": (10, 1)}),
    ],
}
NOTES = {"Pixelsmith upscale - Flux.1 dev 1024 to 4K (4096 px), two x2 stages": (FLUX_NOTE, FLUX_FILES)}


def build(name: str, spec: list, node_classes: dict) -> dict:
    """The UI-format workflow of one graph."""
    nodes, links = [], []
    outgoing: dict[tuple[int, int], list[int]] = {}
    note, files = NOTES[name]
    for order, (node_id, type_, title, values, inputs) in enumerate(spec):
        cls = node_classes[type_]
        spec_inputs = cls.INPUT_TYPES()
        types = {k: v[0] for section in ("required", "optional") for k, v in (spec_inputs.get(section) or {}).items()}
        ui_inputs, widgets = [], []
        for input_name, widget, extra in widget_layout(cls):
            if input_name in inputs:
                source, slot = inputs[input_name]
                link_id = len(links) + 1
                src_cls = node_classes[next(t for i, t, *_ in spec if i == source)]
                links.append([link_id, source, slot, node_id, len(ui_inputs), src_cls.RETURN_TYPES[slot]])
                outgoing.setdefault((source, slot), []).append(link_id)
                ui_inputs.append({"name": input_name, "type": types[input_name], "link": link_id})
            elif not widget:
                ui_inputs.append({"name": input_name, "type": types[input_name], "link": None})
            if widget:
                widgets.append(values[input_name])
                if extra == "control":
                    widgets.append("fixed")
        properties = {"Node name for S&R": type_}
        models = [{"name": v, "url": files[v][0], "directory": files[v][1]} for v in values.values() if v in files]
        if models:
            properties["models"] = models
        nodes.append({"id": node_id, "type": type_, "pos": [order % 4 * 360, order // 4 * 320], "size": [315, 130],
                      "flags": {}, "order": order, "mode": 0, "inputs": ui_inputs, "outputs": [],
                      "properties": properties, "widgets_values": widgets, "title": title, "_cls": cls})
    for node in nodes:
        cls = node.pop("_cls")
        names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
        node["outputs"] = [{"name": n, "type": t, "links": outgoing.get((node["id"], i), []), "slot_index": i}
                           for i, (n, t) in enumerate(zip(names, cls.RETURN_TYPES, strict=True))]
    nodes.append({"id": len(spec) + 1, "type": "MarkdownNote", "pos": [0, -260], "size": [620, 220], "flags": {},
                  "order": 0, "mode": 0, "inputs": [], "outputs": [], "properties": {}, "widgets_values": [note]})
    return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, name)), "revision": 0, "last_node_id": len(spec) + 1,
            "last_link_id": len(links), "nodes": nodes, "links": links, "groups": [], "config": {},
            "extra": {"ds": {"scale": 0.8, "offset": [0, 300]}}, "version": 0.4}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--comfyui", type=Path, default=os.environ.get("ULTRARES_COMFYUI"))
    args = p.parse_args(argv)
    host = ComfyHost.boot(args.comfyui, Path(tempfile.mkdtemp(prefix="ultrares_dit_workflows_")),
                          packs={"ultrares": PACK_ROOT, "ultrares_testing": FIXTURE_PACK})
    for name, spec in WORKFLOWS.items():
        path = WORKFLOW_DIR / f"{name}.json"
        path.write_text(json.dumps(build(name, spec, host.node_classes), indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
