"""Write the DiT template workflows ``example_workflows/<name>.json`` from the compact graphs below.

    python scripts/make_dit_workflows.py [--comfyui DIR]     # host venv python

Each graph names its nodes, their widget values (by input name) and their links; the node classes of a
real ComfyUI host give the input order, the widget layout and the output types, so the files are what
the frontend saves. Thumbnails: ``scripts/make_thumbnails.py``.
"""
from __future__ import annotations

import argparse
import json
import math
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
PROMPT = "A medieval harbour town at dawn, fishing boats, stone houses, intricate details, sharp focus, 8k photograph"
SEED = 123


def hf(repo: str, path: str, folder: str) -> tuple[str, str]:
    return f"{HF}/{repo}/resolve/main/{path}", folder


# file name -> (download URL, ComfyUI models folder)
FILES = {
    "flux1-dev.safetensors": hf("black-forest-labs/FLUX.1-dev", "flux1-dev.safetensors", "diffusion_models"),
    "clip_l.safetensors": hf("comfyanonymous/flux_text_encoders", "clip_l.safetensors", "text_encoders"),
    "t5xxl_fp16.safetensors": hf("comfyanonymous/flux_text_encoders", "t5xxl_fp16.safetensors", "text_encoders"),
    "ae.safetensors": hf("black-forest-labs/FLUX.1-dev", "ae.safetensors", "vae"),
    "flux2_dev_fp8mixed.safetensors": hf("Comfy-Org/flux2-dev", "split_files/diffusion_models/"
                                         "flux2_dev_fp8mixed.safetensors", "diffusion_models"),
    "mistral_3_small_flux2_bf16.safetensors": hf("Comfy-Org/flux2-dev", "split_files/text_encoders/"
                                                 "mistral_3_small_flux2_bf16.safetensors", "text_encoders"),
    "flux2-vae.safetensors": hf("Comfy-Org/flux2-dev", "split_files/vae/flux2-vae.safetensors", "vae"),
    "qwen_image_fp8_e4m3fn.safetensors": hf("Comfy-Org/Qwen-Image_ComfyUI", "split_files/diffusion_models/"
                                            "qwen_image_fp8_e4m3fn.safetensors", "diffusion_models"),
    "qwen_2.5_vl_7b_fp8_scaled.safetensors": hf("Comfy-Org/Qwen-Image_ComfyUI", "split_files/text_encoders/"
                                                "qwen_2.5_vl_7b_fp8_scaled.safetensors", "text_encoders"),
    "qwen_image_vae.safetensors": hf("Comfy-Org/Qwen-Image_ComfyUI", "split_files/vae/qwen_image_vae.safetensors",
                                     "vae"),
    "z_image_turbo_bf16.safetensors": hf("Comfy-Org/z_image_turbo", "split_files/diffusion_models/"
                                         "z_image_turbo_bf16.safetensors", "diffusion_models"),
    "qwen_3_4b.safetensors": hf("Comfy-Org/z_image_turbo", "split_files/text_encoders/qwen_3_4b.safetensors",
                                "text_encoders"),
    "sd3.5_large_fp8_scaled.safetensors": hf("Comfy-Org/stable-diffusion-3.5-fp8",
                                             "sd3.5_large_fp8_scaled.safetensors", "checkpoints"),
}
Z_IMAGE_VAE = hf("Comfy-Org/z_image_turbo", "split_files/vae/ae.safetensors", "vae")  # ungated copy of Flux.1's


def files_table(rows: list[tuple[str, str, str]]) -> str:
    """The note's model-file table: (files, folder, where to get them)."""
    return ("## Model files\n| file | folder | download |\n|---|---|---|\n"
            + "".join(f"| {f} | `models/{d}/` | {w} |\n" for f, d, w in rows) + "\n")


def pixelsmith_stages(first_id: int, model: tuple, vae: tuple, positive: tuple, negative: tuple, latent: tuple,
                      scales: list[float], steps: int, cfg: float, patch_size: int, side: int) -> list:
    """One Pixelsmith Upscale per scale, chained by LATENT; the last decodes the image."""
    nodes = []
    for i, scale in enumerate(scales):
        side = round(side * scale)
        nodes.append((first_id + i, "UltraRes_PixelsmithUpscale", f"Pixelsmith ×{scale:g} → {side}²",
                      {"scale_by": scale, "target_width": 0, "target_height": 0, "seed": SEED, "steps": steps,
                       "cfg": cfg, "slider": -1, "patch_size": patch_size, "band": 80, "mode": "fast",
                       "patch_batch": 0, "crop_conditioning": "fixed", "state_device": "auto",
                       "decode_image": i == len(scales) - 1, "keep_detail": False, "positions": "local"},
                      {"model": model, "vae": vae, "positive": positive, "negative": negative,
                       "latent": latent if i == 0 else (first_id + i - 1, 0)}))
    return nodes


def text_nodes(first_id: int, clip: tuple, negative: str) -> list:
    return [(first_id, "CLIPTextEncode", "Prompt", {"text": PROMPT}, {"clip": clip}),
            (first_id + 1, "CLIPTextEncode", "Negative" + (" (unused at cfg 1)" if not negative else ""),
             {"text": negative}, {"clip": clip})]


def base_sampler(node_id: int, title: str, model: tuple, positive: tuple, negative: tuple, latent: tuple,
                 steps: int, cfg: float, sampler: str, scheduler: str) -> tuple:
    return (node_id, "KSampler", title,
            {"seed": SEED, "steps": steps, "cfg": cfg, "sampler_name": sampler, "scheduler": scheduler,
             "denoise": 1.0},
            {"model": model, "positive": positive, "negative": negative, "latent_image": latent})


def save(node_id: int, source: int, prefix: str, side: int) -> tuple:
    return (node_id, "SaveImage", f"Save the {side}² image", {"filename_prefix": f"ultrares/{prefix}"},
            {"images": (source, 1)})


def unet_loader(node_id: int, file: str, title: str) -> tuple:
    return (node_id, "UNETLoader", title, {"unet_name": file, "weight_dtype": "default"}, {})


def clip_loader(node_id: int, file: str, type_: str, title: str) -> tuple:
    return (node_id, "CLIPLoader", title, {"clip_name": file, "type": type_, "device": "default"}, {})


def vae_loader(node_id: int, file: str, title: str) -> tuple:
    return (node_id, "VAELoader", title, {"vae_name": file}, {})


def empty_latent(node_id: int, type_: str, side: int) -> tuple:
    return (node_id, type_, f"{side}² base", {"width": side, "height": side, "batch_size": 1}, {})


def split_files_graph(family: str, unet: str, clip: str, clip_type: str, vae: str, *, encoder: str, vae_label: str,
                      shift: float = 0.0, guidance: float = 0.0, empty: str = "EmptySD3LatentImage", side: int = 1024,
                      steps: int, cfg: float, sampler: str = "euler", scales: tuple = (2.0, 2.0),
                      patch_size: int = 1024, negative: str = "", prefix: str) -> list:
    """A family loaded from split files (diffusion model, text encoder, VAE: nodes 1–3), prompt and
    negative (4, 5), node 6 = its flow shift (ModelSamplingAuraFlow) or its distilled guidance
    (FluxGuidance), the base latent and sampler (7, 8), the Pixelsmith stages and Save Image."""
    model, positive = ((6, 0), (4, 0)) if shift else ((1, 0), (6, 0))
    last = 9 + len(scales) - 1
    return [
        unet_loader(1, unet, f"Load {family} (models/diffusion_models)"),
        clip_loader(2, clip, clip_type, f"Load {encoder} (models/text_encoders)"),
        vae_loader(3, vae, f"Load {vae_label} (models/vae)"),
        *text_nodes(4, (2, 0), negative),
        (6, "ModelSamplingAuraFlow", f"Flow shift {shift:g}", {"shift": shift}, {"model": (1, 0)}) if shift else
        (6, "FluxGuidance", f"Guidance {guidance:g}", {"guidance": guidance}, {"conditioning": (4, 0)}),
        empty_latent(7, empty, side),
        base_sampler(8, f"Stage 0: {family} {side}² ({steps} steps, cfg {cfg:g})", model, positive, (5, 0), (7, 0),
                     steps, cfg, sampler, "simple"),
        *pixelsmith_stages(9, model, (3, 0), positive, (5, 0), (8, 0), list(scales), steps, cfg, patch_size, side),
        save(last + 1, last, prefix, round(side * math.prod(scales))),
    ]


FLUX1_FILES = files_table([
    ("`flux1-dev.safetensors`", "diffusion_models", "[black-forest-labs/FLUX.1-dev](https://huggingface.co/"
     "black-forest-labs/FLUX.1-dev) (gated: accept its licence)"),
    ("`clip_l.safetensors`, `t5xxl_fp16.safetensors`", "text_encoders",
     "[comfyanonymous/flux_text_encoders](https://huggingface.co/comfyanonymous/flux_text_encoders)"),
    ("`ae.safetensors`", "vae", "[black-forest-labs/FLUX.1-dev](https://huggingface.co/black-forest-labs/"
     "FLUX.1-dev)")])


def flux1_base() -> list:
    """Flux.1 dev from its split files (nodes 1-3), prompt + FluxGuidance 3.5 (4, 5), the unused negative (6),
    and the 1024² base (7, 8)."""
    return [
        unet_loader(1, "flux1-dev.safetensors", "Load Flux.1 dev (models/diffusion_models)"),
        (2, "DualCLIPLoader", "Load CLIP-L + T5-XXL (models/text_encoders)",
         {"clip_name1": "clip_l.safetensors", "clip_name2": "t5xxl_fp16.safetensors", "type": "flux",
          "device": "default"}, {}),
        vae_loader(3, "ae.safetensors", "Load the Flux VAE (models/vae)"),
        (4, "CLIPTextEncode", "Prompt", {"text": PROMPT}, {"clip": (2, 0)}),
        (5, "FluxGuidance", "Guidance 3.5", {"guidance": 3.5}, {"conditioning": (4, 0)}),
        (6, "CLIPTextEncode", "Negative (unused at cfg 1)", {"text": ""}, {"clip": (2, 0)}),
        empty_latent(7, "EmptySD3LatentImage", 1024),
        base_sampler(8, "Stage 0: Flux dev 1024² (28 steps, cfg 1)", (1, 0), (5, 0), (6, 0), (7, 0), 28, 1.0,
                     "euler", "simple"),
    ]


# name -> (note, nodes): (id, type, title, widget values by input name, links {input: (source id, output slot)})
WORKFLOWS = {
    "Pixelsmith upscale - Flux.1 dev 1024 to 4K (4096 px), two x2 stages": (
        FLUX1_FILES
        + "Flux dev is guidance-distilled: cfg 1 everywhere, the guidance comes from FluxGuidance (3.5). Pixelsmith "
          "runs each 1024 px patch at local positions (its measured default); two ×2 stages at 28 steps take "
          "231 + 1023 patch calls in faithful mode, 252 + 700 patches batched several to a call in fast mode. "
          "UltraRes itself never downloads anything.",
        [
            *flux1_base(),
            *pixelsmith_stages(9, (1, 0), (3, 0), (5, 0), (6, 0), (8, 0), [2.0, 2.0], 28, 1.0, 1024, 1024),
            save(11, 10, "pixelsmith_flux_4096", 4096),
        ]),
    "FreeScale upscale - Flux.1 dev 1024 to 4K (4096 px)": (
        FLUX1_FILES
        + "FreeScale on Flux dev: the self-cascade 1024 → 2048 → 4096 in Flux's flow space, each stage restarting "
          "from 30 % of the 28 steps, with Scale Fusion on the joint attention (1024 px windows of image tokens, "
          "each with the whole prompt). Restrained dilation and FreeU act on UNets only and are off. Every model "
          "call is the full picture: 20 + 20 calls, each costlier than a patch. cfg 1 with FluxGuidance 3.5; "
          "tiled decode at the end. UltraRes itself never downloads anything.",
        [
            *flux1_base(),
            (9, "UltraRes_FreeScaleUpscale", "FreeScale 1024 → 2048 → 4096",
             {"resolutions": "2048, 4096", "seed": SEED, "steps": 28, "cfg": 1.0, "cosine_scale": 2.0,
              "cosine_scale_bg": 1.0, "fast_mode": False, "dilation": False, "freeu": False, "keep_detail": False},
             {"model": (1, 0), "vae": (3, 0), "positive": (5, 0), "negative": (6, 0), "latent": (8, 0)}),
            (10, "VAEDecodeTiled", "Tiled decode", {"tile_size": 1024, "overlap": 64, "temporal_size": 64,
                                                     "temporal_overlap": 8}, {"samples": (9, 0), "vae": (3, 0)}),
            (11, "SaveImage", "Save the 4096² image", {"filename_prefix": "ultrares/freescale_flux_4096"},
             {"images": (10, 0)}),
        ]),
    "Pixelsmith upscale - Flux.2 dev 1024 to 4K (4096 px), two x2 stages": (
        files_table([
            ("`flux2_dev_fp8mixed.safetensors`", "diffusion_models", "[Comfy-Org/flux2-dev](https://huggingface.co/"
             "Comfy-Org/flux2-dev)"),
            ("`mistral_3_small_flux2_bf16.safetensors`", "text_encoders", "same repository (an fp8 copy also works)"),
            ("`flux2-vae.safetensors`", "vae", "same repository")])
        + "Flux.2 is guidance-distilled (cfg 1, FluxGuidance 4). Its latent has 128 channels at 16 px per cell, "
          "so patch_size 1024 px (its native size) is 64 cells; the VAE round trip between stages never resamples the "
          "packed latent. Pixelsmith runs each patch at local positions. UltraRes itself never downloads anything.",
        split_files_graph("Flux.2 dev", "flux2_dev_fp8mixed.safetensors", "mistral_3_small_flux2_bf16.safetensors",
                          "flux2", "flux2-vae.safetensors", encoder="Mistral 3", vae_label="the Flux.2 VAE",
                          guidance=4.0, empty="EmptyFlux2LatentImage", steps=28,
                          cfg=1.0, prefix="pixelsmith_flux2_4096")),
    "Pixelsmith upscale - Qwen-Image 1328 to 4K (3984 px), x2 then x1.5": (
        files_table([
            ("`qwen_image_fp8_e4m3fn.safetensors`", "diffusion_models", "[Comfy-Org/Qwen-Image_ComfyUI]"
             "(https://huggingface.co/Comfy-Org/Qwen-Image_ComfyUI)"),
            ("`qwen_2.5_vl_7b_fp8_scaled.safetensors`", "text_encoders", "same repository"),
            ("`qwen_image_vae.safetensors`", "vae", "same repository")])
        + "Qwen-Image is native at 1328²; patch_size 1328 px (166 latent cells) is its native size. Its latent is one "
          "frame of a video latent, (B, 16, 1, H, W): the stages keep it so. Qwen-Image cannot shift its rotary "
          "positions, so each patch runs at local positions. cfg 2.5 and 20 steps as ComfyUI's fp8 template; "
          "ModelSamplingAuraFlow 3.1 sets its flow shift. UltraRes itself never downloads anything.",
        split_files_graph("Qwen-Image", "qwen_image_fp8_e4m3fn.safetensors", "qwen_2.5_vl_7b_fp8_scaled.safetensors",
                          "qwen_image", "qwen_image_vae.safetensors", encoder="Qwen2.5-VL 7B",
                          vae_label="the Qwen-Image VAE", shift=3.1, side=1328, steps=20, cfg=2.5,
                          scales=(2.0, 1.5), patch_size=1328, negative="blurry, low quality, deformed",
                          prefix="pixelsmith_qwen_image_3984")),
    "Pixelsmith upscale - Z-Image-Turbo 1024 to 4K (4096 px), 8 steps per stage": (
        files_table([
            ("`z_image_turbo_bf16.safetensors`", "diffusion_models", "[Comfy-Org/z_image_turbo](https://huggingface.co/"
             "Comfy-Org/z_image_turbo)"),
            ("`qwen_3_4b.safetensors`", "text_encoders", "same repository"),
            ("`ae.safetensors`", "vae", "same repository (the Flux.1 VAE)")])
        + "Z-Image-Turbo is distilled to 8 steps at cfg 1. slider -1 guides round(0.4 × 8) = 3 of the 8 steps "
          "of a first ×2 stage and 5 of the second (the paper's 40 % / 60 %), so the picture keeps its layout "
          "in few steps. Each patch runs at local positions. UltraRes itself never downloads anything.",
        split_files_graph("Z-Image-Turbo", "z_image_turbo_bf16.safetensors", "qwen_3_4b.safetensors", "lumina2",
                          "ae.safetensors", encoder="Qwen3 4B", vae_label="the Flux.1 VAE", shift=3.0, steps=8,
                          cfg=1.0, sampler="res_multistep",
                          prefix="pixelsmith_z_image_turbo_4096")),
    "Pixelsmith upscale - SD3.5 Large 1024 to 4K (4096 px), two x2 stages": (
        files_table([
            ("`sd3.5_large_fp8_scaled.safetensors` (text encoders built in)", "checkpoints",
             "[Comfy-Org/stable-diffusion-3.5-fp8](https://huggingface.co/Comfy-Org/stable-diffusion-3.5-fp8)")])
        + "SD3.5 Large at 28 steps, cfg 4.5, dpmpp_2m + sgm_uniform. SD3's position embedding is a fixed table "
          "centred on the input, so each 1024 px patch runs at local positions (the only kind it has). "
          "UltraRes itself never downloads anything.",
        [
            (1, "CheckpointLoaderSimple", "Load SD3.5 Large (models/checkpoints)",
             {"ckpt_name": "sd3.5_large_fp8_scaled.safetensors"}, {}),
            *text_nodes(2, (1, 1), "blurry, low quality, deformed, watermark"),
            empty_latent(4, "EmptySD3LatentImage", 1024),
            base_sampler(5, "Stage 0: SD3.5 Large 1024² (28 steps, cfg 4.5)", (1, 0), (2, 0), (3, 0), (4, 0), 28,
                         4.5, "dpmpp_2m", "sgm_uniform"),
            *pixelsmith_stages(6, (1, 0), (1, 2), (2, 0), (3, 0), (5, 0), [2.0, 2.0], 28, 4.5, 1024, 1024),
            save(8, 7, "pixelsmith_sd35_4096", 4096),
        ]),
}


def build(name: str, spec: list, node_classes: dict) -> dict:
    """The UI-format workflow of one graph."""
    nodes, links = [], []
    outgoing: dict[tuple[int, int], list[int]] = {}
    note, _ = WORKFLOWS[name]
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
        files = {**FILES, "ae.safetensors": Z_IMAGE_VAE} if "Z-Image" in name else FILES
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
    for name, (_, spec) in WORKFLOWS.items():
        path = WORKFLOW_DIR / f"{name}.json"
        path.write_text(json.dumps(build(name, spec, host.node_classes), indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
