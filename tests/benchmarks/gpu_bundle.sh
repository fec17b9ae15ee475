#!/usr/bin/env bash
# Bundle what the GPU suite needs on a CUDA machine that has Python 3.12 and PyTorch but no network.
#
#   tests/benchmarks/gpu_bundle.sh [DEST]        # default DEST: .gpu (git-ignored)
#
# DEST/ComfyUI: the pinned ComfyUI tree of scripts/build_host.sh, without its tests and the
#   text-encoder tokenizer files (the suite's random models never tokenize), about 7 MB;
# DEST/wheels: CPython 3.12 manylinux wheels of the ComfyUI requirements a CUDA PyTorch image
#   usually lacks (PyAV, kornia, torchsde), about 42 MB, fetched from PyPI here.
#
# On the CUDA machine, from the pack's root (DEST copied along):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/wheels/*.whl
#   PYTHONPATH=/tmp/site ULTRARES_COMFYUI=.gpu/ComfyUI HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 \
#     python3 tests/benchmarks/gpu_suite.py --out gpu_suite_out
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
DEST="${1:-.gpu}"
WHEELS=(av kornia kornia_rs torchsde trampoline)

HOST="$(scripts/build_host.sh | tail -n 1)"
rm -rf "$DEST/ComfyUI" "$DEST/wheels"
mkdir -p "$DEST/ComfyUI" "$DEST/wheels"
# Every file but caches, tests and data files over 256 KiB (tokenizer vocabularies and merges).
(cd "$HOST/ComfyUI" && find . -type f -not -path '*/__pycache__/*' -not -path './tests/*' \
   -not -path './tests-unit/*' \( -name '*.py' -o -size -256k \) -print0 | tar --null -T - -cf -) \
  | (cd "$DEST/ComfyUI" && tar -xf -)
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$DEST/wheels" "${WHEELS[@]}"
du -sh "$DEST/ComfyUI" "$DEST/wheels"
