"""Write the Templates browser cards ``example_workflows/<name>.jpg``: result pictures and the files needed.

    python scripts/make_thumbnails.py [--comfyui DIR]     # host venv python

ComfyUI's Templates browser shows a custom pack's template by its file name and a same-name JPEG,
and reads nothing else from the pack. So each card carries what an artist needs to choose: the
method's result (rendered here by the demo workflow on the built-in demo model, and labelled so),
and the model files the workflow loads (``model_files``: its loaders' ``properties.models``).
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
from harness.comfy_host import ComfyHost  # noqa: E402
from harness.pack import DEMO_WORKFLOW, PACK_ROOT, WORKFLOWS  # noqa: E402
from harness.workflow_format import load_prompt, model_files  # noqa: E402

CARD = (640, 480)
PICTURE_H = 340
# Which demo images each kind of template shows, by the start of its file name.
PANELS = {
    "Demo": [("1_direct_512", "direct: repeats"), ("3_pixelsmith_512", "Pixelsmith"),
             ("5_freescale_512", "FreeScale"), ("8_ultrapixel_384", "UltraPixel")],
    "Pixelsmith": [("0_base_128", "base"), ("3_pixelsmith_512", "Pixelsmith x4")],
    "FreeScale": [("0_base_128", "base"), ("5_freescale_512", "FreeScale x4")],
    "UltraPixel": [("9_direct_cascade_384", "direct x4: repeats"), ("6_ultrapixel_lr_96", "LR picture"),
                   ("8_ultrapixel_384", "UltraPixel x4")],
}
# Templates for a DiT family (named in the file name) show the same method on the built-in demo DiT.
DIT_FAMILIES = ("Flux", "Qwen-Image", "Z-Image", "SD3")
DIT_PANELS = {
    "Pixelsmith": [("10_dit_base_64", "base"), ("12_dit_pixelsmith_256", "Pixelsmith x4")],
    "FreeScale": [("10_dit_base_64", "base"), ("13_dit_freescale_256", "FreeScale x4")],
}


def render_demo(comfyui: str) -> dict:
    """The demo workflow's images (uint8 [H, W, 3]), by their Save Image file-name prefix."""
    host = ComfyHost.boot(comfyui, Path(tempfile.mkdtemp(prefix="ultrares-thumbs-")), packs={"ultrares": PACK_ROOT})
    prompt = load_prompt(DEMO_WORKFLOW, host)
    result = host.run(prompt)
    return {node["inputs"]["filename_prefix"].split("/")[-1]: host.saved_images(result, node_id)[0]
            for node_id, node in prompt.items() if node["class_type"] == "SaveImage"}


def wrapped(draw, text: str, font, width: int) -> list[str]:
    """``text`` broken into lines no wider than ``width`` px (at word boundaries)."""
    lines = [""]
    for word in text.split():
        trial = f"{lines[-1]} {word}".strip()
        if lines[-1] and draw.textlength(trial, font=font) > width:
            lines.append(word)
        else:
            lines[-1] = trial
    return lines


def card(path: Path, images: dict):
    from PIL import Image, ImageDraw, ImageFont

    font = {size: ImageFont.load_default(size=size) for size in (17, 24, 44)}
    img = Image.new("RGB", CARD, "#202124")
    draw = ImageDraw.Draw(img)
    dit = any(family in path.stem for family in DIT_FAMILIES)
    panels = next((p for prefix, p in (DIT_PANELS if dit else PANELS).items() if path.stem.startswith(prefix)), [])
    y = 8
    if panels:
        side = min(PICTURE_H - 26, CARD[0] // len(panels) - 8)
        x = (CARD[0] - len(panels) * (side + 8) + 8) // 2
        for key, label in panels:
            img.paste(Image.fromarray(images[key]).resize((side, side), Image.LANCZOS), (x, y))
            draw.text((x + 4, y + side + 4), label, fill="#e8eaed", font=font[17])
            x += side + 8
        y += side + 34
        caption = ("runs on a CPU with the built-in demo model" if path.stem.startswith("Demo")
                   else f"pictured: the same method on the built-in CPU demo {'DiT' if dit else 'model'}")
    else:
        draw.text((16, y + 24), path.stem.split(" - ")[0], fill="#e8eaed", font=font[44])
        y += 100
        caption = "no picture: the demo model has no UltraPixel weights"
    lines = [(line, 24, "#e8eaed") for line in wrapped(draw, path.stem.split(" - ", 1)[-1], font[24], CARD[0] - 32)]
    files = model_files(json.loads(path.read_text()))
    lines += [(line, 17, "#e8eaed") for line in wrapped(draw, "needs: " + (", ".join(files) or "nothing to download"),
                                                         font[17], CARD[0] - 32)]
    lines.append((caption, 17, "#9aa0a6"))
    for text, size, colour in lines:
        draw.text((16, y), text, fill=colour, font=font[size])
        y += size + 10
    img.save(path.with_suffix(".jpg"), quality=88)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", default=os.environ.get("ULTRARES_COMFYUI"),
                        required=not os.environ.get("ULTRARES_COMFYUI"))
    args = parser.parse_args()
    images = render_demo(args.comfyui)
    for path in WORKFLOWS:
        card(path, images)
        print(path.with_suffix(".jpg"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
