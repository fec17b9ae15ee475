"""Write ``workflows/<name>.jpg`` thumbnails (Templates browser) from the real frontend's graph view.

    python scripts/make_thumbnails.py [--comfyui DIR]     # host venv python
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

# The one path set-up of this entry point: the harness package lives in tests/harness.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from harness.comfy_server import comfy_server  # noqa: E402
from harness.frontend import load_workflow, open_frontend, screenshot_graph  # noqa: E402
from harness.pack import PACK_ROOT  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", default=os.environ.get("ULTRARES_COMFYUI"),
                        required=not os.environ.get("ULTRARES_COMFYUI"))
    parser.add_argument("--force", action="store_true", help="redo thumbnails that are newer than their workflow")
    args = parser.parse_args()
    from PIL import Image

    work = Path(tempfile.mkdtemp(prefix="ultrares-thumbs-"))
    with comfy_server(Path(args.comfyui).resolve(), work, {"ultrares": PACK_ROOT}) as (base, _):
        with open_frontend(base) as page:
            for path in sorted((PACK_ROOT / "workflows").glob("*.json")):
                thumb = path.with_suffix(".jpg")
                if not args.force and thumb.exists() and thumb.stat().st_mtime >= path.stat().st_mtime:
                    continue
                state = load_workflow(page, json.loads(path.read_text()))
                if state["missing"]:
                    print(f"{path.name}: missing node types {state['missing']}", file=sys.stderr)
                    return 1
                shot = work / f"{path.stem}.png"
                screenshot_graph(page, shot, crop=True)
                img = Image.open(shot).convert("RGB")
                img.thumbnail((768, 480), Image.LANCZOS)
                img.save(thumb, quality=85)
                print(thumb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
