#!/usr/bin/env bash
# Set up the pinned ComfyUI host (cached) and render a shipped workflow headless on the tiny
# seeded demo models (no weight files needed).
#
#   tests/host/demo.sh [WORKFLOW.json] [OUT_DIR]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
WORKFLOW="${1:-workflows/freescale_scale_fusion_sdxl_2048.json}"
OUT="${2:-out/demo}"
HOST="$(tests/host/build_host.sh | tail -n 1)"
HF_HUB_OFFLINE=1 "$HOST/venv/bin/python" tests/host/run_workflow.py "$WORKFLOW" --out "$OUT" --demo \
  --comfyui "$HOST/ComfyUI"
