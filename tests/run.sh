#!/usr/bin/env bash
# Set up the pinned ComfyUI host (cached), lint with ruff, and run the whole test suite against it.
#
#   tests/run.sh [pytest args...]
#
# Against another ComfyUI tree: ULTRARES_COMFYUI_TREE=/path/to/ComfyUI \
#   ULTRARES_COMFYUI_LOCK=scripts/locks/lock-comfyui-0.33.0-cpu.txt tests/run.sh
# Exits non-zero on any lint finding or test failure, and also when no test ran.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build_args=()
[ -n "${ULTRARES_COMFYUI_TREE:-}" ] && build_args+=(--tree "$ULTRARES_COMFYUI_TREE")
[ -n "${ULTRARES_COMFYUI_LOCK:-}" ] && build_args+=(--lock "$ULTRARES_COMFYUI_LOCK")
HOST="$(scripts/build_host.sh "${build_args[@]}" | tail -n 1)"

# Lint first (configuration: [tool.ruff] in pyproject.toml); ruff is pinned, installed into the host venv.
RUFF_PIN="ruff==0.17.6"
"$HOST/venv/bin/python" -m pip install --quiet --disable-pip-version-check "$RUFF_PIN"
"$HOST/venv/bin/python" -m ruff check .

# The frontend tests drive Debian's chromium (never a browser download).
if ! command -v chromium >/dev/null 2>&1; then
  echo "tests/run.sh: installing Debian's chromium for the frontend tests" >&2
  if [ "$(id -u)" -eq 0 ]; then as_root=(); else as_root=(sudo); fi
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

set +e
ULTRARES_COMFYUI="$HOST/ComfyUI" HF_HUB_OFFLINE=1 "$HOST/venv/bin/python" -m pytest tests "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "tests/run.sh: no test was collected; treating that as a failure" >&2
  exit 1
fi
exit "$rc"
