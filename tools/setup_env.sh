#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment at .venv/ in the repo root. Steps
# stop at the first failure and name it; a second run is quick (pip's wheel cache keeps
# the compiled mmcv, and steps whose packages are present are skipped).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
VPY=.venv/bin/python
TOTAL=8
step=0
t0=$(date +%s)

run_step() {  # run_step NAME COMMAND...: run it, log kept and shown only on failure
  local name="$1" s log; shift
  step=$((step + 1)); s=$(date +%s); log=$(mktemp)
  printf '[setup %d/%d] %s ... ' "$step" "$TOTAL" "$name"
  if "$@" >"$log" 2>&1; then
    echo "ok ($(( $(date +%s) - s ))s)"; rm -f "$log"
  else
    echo "FAILED"; tail -n 40 "$log" >&2
    echo "setup failed at step $step/$TOTAL: $name (full log: $log)" >&2
    exit 1
  fi
}

skip() { step=$((step + 1)); echo "[setup $step/$TOTAL] $1 present"; }

have() {  # have PKG[==VERSION]...: all installed (at those versions)
  "$VPY" -c 'import sys; from importlib.metadata import version
for n, _, v in (s.partition("==") for s in sys.argv[1:]):
    assert version(n).split("+")[0] == v or not v' "$@" >/dev/null 2>&1
}

pipi() { "$VPY" -m pip install --disable-pip-version-check "$@"; }

if [ -x "$VPY" ]; then skip "virtual environment"
else run_step "create virtual environment ($PY -m venv .venv)" "$PY" -m venv .venv; fi

if have torch==2.13.0 ninja setuptools; then skip "torch 2.13.0"
else run_step "install torch 2.13.0 (CPU), build tools" \
  pipi torch==2.13.0 'setuptools>=77.0.3,<82' wheel ninja 'numpy>=1.26'; fi

if have mmengine==0.10.7; then skip "mmengine 0.10.7"
else run_step "install mmengine 0.10.7" pipi mmengine==0.10.7 torch==2.13.0; fi

if have mmcv==2.1.0 && "$VPY" -c 'import mmcv.ops' >/dev/null 2>&1; then skip "mmcv 2.1.0 with ops"
else
  echo "    (mmcv 2.1.0 compiles from source with its ops the first time: about 15 minutes on 2 cores; later runs use pip's wheel cache)"
  run_step "build and install mmcv 2.1.0 with ops" env MMCV_WITH_OPS=1 \
    MAX_JOBS="${MAX_JOBS:-$(nproc)}" "$VPY" -m pip install --disable-pip-version-check \
    --no-build-isolation mmcv==2.1.0
fi

if have mmdet==3.3.0; then skip "mmdet 3.3.0"
else run_step "install mmdet 3.3.0, pycocotools, pytest" \
  pipi mmdet==3.3.0 pycocotools pytest torch==2.13.0 mmcv==2.1.0 'setuptools<82'; fi

run_step "install cbam_mmdet (editable)" pipi --no-build-isolation --no-deps -e .
run_step "build the C++ extensions (CPU kernels, Triton programs; in place)" \
  "$VPY" setup.py -q build_ext --inplace
run_step "check imports" "$VPY" -c 'import torch, mmcv, mmcv.ops, mmengine, mmdet, cbam_mmdet
from cbam_mmdet.ops.extensions import describe
print(torch.__version__, mmcv.__version__, mmdet.__version__, describe("cpu"))'
echo "[setup] environment ready in $(( $(date +%s) - t0 ))s"
