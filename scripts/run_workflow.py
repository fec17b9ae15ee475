"""Run a ComfyUI workflow headless on a real ComfyUI host and write its outputs to a folder.

    python scripts/run_workflow.py WORKFLOW.json --out DIR [--comfyui DIR] [--demo]

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
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# The one path set-up of this entry point: the harness package lives in tests/harness.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from harness.comfy_host import FIXTURE_PACK, PACK_ROOT, ComfyHost, WorkflowError  # noqa: E402
from harness.demo_loaders import swap_demo_loaders  # noqa: E402
from harness.workflow_format import WorkflowFormatError, load_prompt  # noqa: E402


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
