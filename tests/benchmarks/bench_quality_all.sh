#!/usr/bin/env bash
# The quality benchmark on every model at once: the shipped demo model, then each benchmark model
# of demo/train_bench.py found in tests/benchmarks/models/ (train them first; missing ones are named).
#
#   tests/benchmarks/bench_quality_all.sh [bench_quality.py args, e.g. --scales 2 4 --samples 32]
#
# Tables go to the console and to out/bench_quality/<model>/table.md, grids and bars beside them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
HOST="$(scripts/build_host.sh | tail -n 1)"
PY="$HOST/venv/bin/python"

run() {  # run NAME [--model-file FILE]
  local name="$1"; shift
  mkdir -p "out/bench_quality/$name"
  echo "## $name"
  HF_HUB_OFFLINE=1 "$PY" tests/benchmarks/bench_quality.py --comfyui "$HOST/ComfyUI" \
    --out "out/bench_quality/$name" "$@" "${ARGS[@]}" | tee "out/bench_quality/$name/table.md"
}

ARGS=("$@")
run demo
for name in $("$PY" -c 'import demo.bench_models as m; print(*m.MODELS)'); do
  file="tests/benchmarks/models/$name.safetensors"
  if [ -f "$file" ]; then
    run "$name" --model-file "$file"
  else
    echo "## $name: $file not found; train it with: $PY -m demo.train_bench --comfyui $HOST/ComfyUI --model $name"
  fi
done
