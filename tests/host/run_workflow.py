"""Run a ComfyUI workflow headless on a real ComfyUI host and write its outputs to a folder.

    python tests/host/run_workflow.py WORKFLOW.json --out DIR [--comfyui DIR] [--demo]

WORKFLOW.json is UI format (as saved by ComfyUI) or API format. ``--comfyui`` is the ComfyUI
folder whose ``models/`` hold the model files (default: $ULTRARES_COMFYUI). ``--demo`` swaps the
stock model loaders for the pack's tiny seeded demo models (built from ComfyUI's own classes,
no weight files), so any shipped workflow runs end to end on a CPU-only machine; its images
show that the graph runs, not what the real models would paint.

Exit status: 0 on success, 2 for a workflow problem (missing node types, missing model files,
invalid inputs), 1 for a failure while executing.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfy_host import FIXTURE_PACK, PACK_ROOT, ComfyHost, WorkflowError  # noqa: E402
from workflow_format import WorkflowFormatError, is_ui_workflow, ui_to_api  # noqa: E402

CASCADE_FILE_HINTS = ("cascade", "stage_a", "stage_b", "stage_c")


def demo_stand_in(class_type: str, inputs: dict) -> dict | None:
    """The test-fixture node replacing a stock loader in ``--demo`` runs, or None if there is none.

    Output slots keep their meaning (MODEL, CLIP, VAE, ...). Stable Cascade stand-ins are chosen
    by file name, so a loader of another model family is refused rather than mis-swapped.
    """
    name = str(next((v for k, v in inputs.items() if k.endswith("_name")), "")).lower()
    cascade = any(hint in name for hint in CASCADE_FILE_HINTS)
    if class_type == "CheckpointLoaderSimple" and not cascade:
        return {"class_type": "UltraResTest_TinyCheckpoint",
                "inputs": {"kind": "sdxl" if "xl" in name else "sd15", "seed": 0}}
    if class_type == "UNETLoader" and cascade:
        return {"class_type": "UltraResTest_TinyCascadeStage",
                "inputs": {"stage": "b" if "stage_b" in name else "c", "seed": 0}}
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


def load_prompt(path: Path, host: ComfyHost) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise WorkflowError(f"cannot read workflow {path}: {e}") from e
    if is_ui_workflow(data):
        return ui_to_api(data, host.node_classes)
    if isinstance(data, dict) and data and all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        return data
    raise WorkflowError(f"{path} is neither a UI-format workflow nor an API-format prompt")


def explain_missing_models(message: str) -> str:
    if "not in list" in message and "_name" in message:
        return (message + "\nA model file named above is not in the ComfyUI models folders. Put it in "
                "the folder the loader reads (e.g. models/checkpoints for ckpt_name), point --comfyui "
                "at a ComfyUI that has it, or use --demo to run on the tiny demo models.")
    return message


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workflow", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="folder for the output files")
    parser.add_argument("--comfyui", default=os.environ.get("ULTRARES_COMFYUI"),
                        help="ComfyUI folder (default: $ULTRARES_COMFYUI)")
    parser.add_argument("--demo", action="store_true", help="run on the tiny seeded demo models")
    args = parser.parse_args(argv)
    if not args.comfyui:
        parser.error("no ComfyUI folder: pass --comfyui or set ULTRARES_COMFYUI")

    work = Path(tempfile.mkdtemp(prefix="ultrares-run-"))
    packs = {"ultrares": PACK_ROOT, **({"ultrares_testing": FIXTURE_PACK} if args.demo else {})}
    try:
        host = ComfyHost.boot(args.comfyui, work, packs=packs)
        prompt = load_prompt(args.workflow, host)
        if args.demo:
            prompt = swap_demo_loaders(prompt)
        t0 = time.perf_counter()
        result = host.run(prompt)
        elapsed = time.perf_counter() - t0
    except (WorkflowError, WorkflowFormatError) as e:
        print(f"error: {explain_missing_models(str(e))}", file=sys.stderr)
        return 2 if "failed:" not in str(e) else 1
    # Outputs were written to the private output folder; move only complete files into --out.
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    for node_out in result.outputs.values():
        for item in node_out.get("images", []):
            if item.get("type") != "output":
                continue
            src = work / "output" / item.get("subfolder", "") / item["filename"]
            dst = args.out / item["filename"]
            shutil.move(str(src), str(dst))
            written.append(dst)
    for path in written:
        print(path)
    print(f"ran {len(prompt)} nodes in {elapsed:.1f} s; {len(written)} file(s) in {args.out}", file=sys.stderr)
    if not written:
        print("error: the workflow produced no output file (does it end in a Save node?)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
