#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment at .venv/ in the repo root.
# Steps stop at the first failure and name it. A second run is quick: pip's wheel cache
# keeps the compiled mmcv, and steps whose packages are already present are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV=.venv
VPY="$VENV/bin/python"
TOTAL=8
step=0
t0=$(date +%s)

run_step() {
  local name="$1"; shift
  step=$((step + 1))
  printf '[setup %d/%d] %s ... ' "$step" "$TOTAL" "$name"
  local s; s=$(date +%s)
  local log; log=$(mktemp)
  if "$@" >"$log" 2>&1; then
    echo "ok ($(( $(date +%s) - s ))s)"
    rm -f "$log"
  else
    echo "FAILED"
    echo "---- last lines of the log of step '$name' ----" >&2
    tail -n 40 "$log" >&2
    echo "setup failed at step $step/$TOTAL: $name (full log: $log)" >&2
    exit 1
  fi
}

have() { "$VPY" - "$@" <<'PYEOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, _, want = spec.partition('==')
    if version(name) != want and want:
        raise SystemExit(1)
PYEOF
}

pipi() { "$VPY" -m pip install --disable-pip-version-check "$@"; }

if [ ! -x "$VPY" ]; then
  run_step "create virtual environment ($PY -m venv $VENV)" "$PY" -m venv "$VENV"
else
  step=$((step + 1)); echo "[setup $step/$TOTAL] virtual environment exists"
fi

if have torch==2.13.0 ninja 'setuptools'; then
  step=$((step + 1)); echo "[setup $step/$TOTAL] torch 2.13.0 present"
else
  run_step "install torch 2.13.0 (CPU), build tools" \
    pipi torch==2.13.0 'setuptools>=77.0.3,<82' wheel ninja 'numpy>=1.26'
fi

if have mmengine==0.10.7; then
  step=$((step + 1)); echo "[setup $step/$TOTAL] mmengine 0.10.7 present"
else
  run_step "install mmengine 0.10.7" pipi mmengine==0.10.7 torch==2.13.0
fi

if have mmcv==2.1.0 && "$VPY" -c 'import mmcv.ops' >/dev/null 2>&1; then
  step=$((step + 1)); echo "[setup $step/$TOTAL] mmcv 2.1.0 with ops present"
else
  echo "    (mmcv 2.1.0 compiles from source with its ops the first time: about 15 minutes on 2 cores; later runs use pip's wheel cache)"
  run_step "build and install mmcv 2.1.0 with ops" \
    env MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    "$VPY" -m pip install --disable-pip-version-check --no-build-isolation mmcv==2.1.0
fi

if have mmdet==3.3.0; then
  step=$((step + 1)); echo "[setup $step/$TOTAL] mmdet 3.3.0 present"
else
  run_step "install mmdet 3.3.0, pycocotools, pytest" \
    pipi mmdet==3.3.0 pycocotools pytest torch==2.13.0 mmcv==2.1.0 'setuptools<82'
fi

run_step "install cbam_mmdet (editable)" pipi --no-build-isolation --no-deps -e .
run_step "build the C++ extensions (CPU kernels, Triton programs; in place)" \
  "$VPY" setup.py -q build_ext --inplace
run_step "check imports" "$VPY" -c 'import torch, mmcv, mmcv.ops, mmengine, mmdet, cbam_mmdet; from cbam_mmdet.ops import cpu_kernels; print(torch.__version__, mmcv.__version__, mmdet.__version__, "CPU kernels:", cpu_kernels.kernels() is not None)'
echo "[setup] environment ready in $(( $(date +%s) - t0 ))s"
