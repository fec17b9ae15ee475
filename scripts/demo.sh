#!/usr/bin/env bash
# Set up the pinned ComfyUI host (cached) and render a shipped workflow headless. The default is
# the demo workflow on the embedded demo model (base 128² → 256² and 512² by Pixelsmith and by
# FreeScale, plus direct 512² sampling for comparison). SDXL / Stable Cascade workflows run on tiny
# seeded stand-ins for their model files (--demo), which shows the graph runs, not what SDXL paints.
#
#   scripts/demo.sh [WORKFLOW.json] [OUT_DIR]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WORKFLOW="${1:-example_workflows/Demo on CPU - Pixelsmith, FreeScale and UltraPixel vs direct sampling (no downloads).json}"
OUT="${2:-out/demo}"
HOST="$(scripts/build_host.sh | tail -n 1)"
HF_HUB_OFFLINE=1 "$HOST/venv/bin/python" scripts/run_workflow.py "$WORKFLOW" --out "$OUT" --demo \
  --comfyui "$HOST/ComfyUI"
