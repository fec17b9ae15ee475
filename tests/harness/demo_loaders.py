"""Tiny seeded stand-ins for stock model loaders, so any shipped workflow runs on a CPU (``--demo``)."""
from __future__ import annotations

from .comfy_host import WorkflowError

CASCADE_FILE_HINTS = ("cascade", "stage_a", "stage_b", "stage_c")
# DiT families by the start of their public diffusion-model file names, text-encoder loader types and
# VAE file names -> the kind of UltraResTest_TinyDiTCheckpoint / TinyDiTVAE / TinyText.
DIT_FILES = {"flux2": "flux2", "qwen_image": "qwen_image", "z_image": "lumina2", "sd3": "sd3"}
DIT_TEXT_TYPES = {"flux2": "flux2", "qwen_image": "qwen_image", "lumina2": "lumina2"}
DIT_VAES = {"flux2-vae.safetensors": "flux2", "qwen_image_vae.safetensors": "qwen_image"}


def dit_kind(name: str) -> str | None:
    return next((kind for prefix, kind in DIT_FILES.items() if name.startswith(prefix)), None)


def demo_stand_in(class_type: str, inputs: dict) -> dict | None:
    """The test-fixture node replacing a stock loader in ``--demo`` runs, or None if there is none.

    Output slots keep their meaning (MODEL, CLIP, VAE, ...). Stable Cascade stand-ins are chosen
    by file name, so a loader of another model family is refused rather than mis-swapped.
    """
    name = str(next((v for k, v in inputs.items() if k.endswith("_name")), "")).lower()
    cascade = any(hint in name for hint in CASCADE_FILE_HINTS)
    if class_type in ("CheckpointLoaderSimple", "UNETLoader") and dit_kind(name):  # slots: MODEL, CLIP, VAE
        return {"class_type": "UltraResTest_TinyDiTCheckpoint", "inputs": {"kind": dit_kind(name), "seed": 0}}
    if class_type == "CLIPLoader" and inputs.get("type") in DIT_TEXT_TYPES:
        return {"class_type": "UltraResTest_TinyText", "inputs": {"kind": DIT_TEXT_TYPES[inputs["type"]]}}
    if class_type == "VAELoader" and name in DIT_VAES:
        return {"class_type": "UltraResTest_TinyDiTVAE", "inputs": {"kind": DIT_VAES[name], "seed": 0}}
    if class_type == "CheckpointLoaderSimple" and not cascade:
        return {"class_type": "UltraResTest_TinyCheckpoint",
                "inputs": {"kind": "sdxl" if "xl" in name else "sd15", "seed": 0}}
    if class_type == "UNETLoader" and cascade:
        return {"class_type": "UltraResTest_TinyCascadeStage",
                "inputs": {"stage": "b" if "stage_b" in name else "c", "seed": 0}}
    if class_type == "UNETLoader" and name.startswith("flux1"):
        return {"class_type": "UltraResTest_TinyFlux", "inputs": {"seed": 0}}  # slot 0: MODEL
    if class_type == "DualCLIPLoader" and inputs.get("type") == "flux":
        return {"class_type": "UltraResTest_TinyText", "inputs": {"kind": "flux"}}
    if class_type == "VAELoader" and name == "ae.safetensors":  # Flux.1's 16-channel VAE
        return {"class_type": "UltraResTest_TinyVAE", "inputs": {"channels": "16", "seed": 0}}
    if class_type == "CLIPLoader" and inputs.get("type") == "stable_cascade":
        return {"class_type": "UltraResTest_TinyCascadeClip", "inputs": {"seed": 0}}
    if class_type == "VAELoader" and cascade:
        return {"class_type": "UltraResTest_TinyStageA", "inputs": {"seed": 0}}
    if class_type == "UltraRes_UltraPixelLoader":
        return {"class_type": "UltraResTest_TinyUltraPixel", "inputs": {"seed": 0, "zero_output": False}}
    return None


def swap_demo_loaders(prompt: dict) -> dict:
    out, unsupported = {}, set()
    for node_id, node in prompt.items():
        swap = demo_stand_in(node["class_type"], node["inputs"])
        if swap is None and "Loader" in node["class_type"]:
            unsupported.add(node["class_type"])
        out[node_id] = {**swap, "_meta": node.get("_meta", {})} if swap else node
    if unsupported:
        raise WorkflowError(f"--demo has no stand-in for loader node(s): {', '.join(sorted(unsupported))}")
    return out
