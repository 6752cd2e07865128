#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment at .venv/ in the repo root. Steps
# stop at the first failure and name it; a second run is quick (steps whose packages are
# present are skipped; pip's wheel cache keeps the compiled mmcv).
# On a machine with an NVIDIA GPU (nvidia-smi answers) torch must be a CUDA build, and
# mmcv is compiled with its CUDA ops for the GPU's compute capability by a CUDA toolkit
# (nvcc) of torch's CUDA major version; without one the setup stops and says what to get.
# That wheel is kept in $CBAM_MMDET_WHEELS (default ~/.cache/cbam_mmdet/wheels), one folder
# per Python, torch, CUDA and compute capability. Settings (environment variables):
#   TORCH=system      use the torch of $PYTHON (default python3) instead of installing
#                     torch 2.13.0; .venv is then made with --system-site-packages
#   SETUP_GPU=9.0     compute capabilities to build for ("8.0;9.0"), or none for the CPU
#                     setup on any machine; default: nvidia-smi's (TORCH_CUDA_ARCH_LIST wins)
#   SETUP_DRY_RUN=1   print the commands of a setup from scratch instead of running them;
#                     SETUP_FAKE_NVCC=13.0|none, SETUP_FAKE_TORCH="2.13.0 13.0" (CUDA none:
#                     a CPU build) replace the toolkit and torch probes there
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=${SETUP_DRY_RUN:-}
case "${TORCH:-}" in
  '') TORCH_REQ=torch==2.13.0; PY=${PYTHON:-python3.11}
      command -v "$PY" >/dev/null 2>&1 || PY=python3 ;;
  system) TORCH_REQ=; PY=${PYTHON:-python3} ;;
  *) echo "setup: TORCH=$TORCH: allowed values: system (use \$PYTHON's torch), or unset" \
       "(install torch 2.13.0)" >&2; exit 2 ;;
esac
VPY=.venv/bin/python
TOTAL=8
step=0
t0=$(date +%s)

die() { echo "setup: $*" >&2; exit 1; }

x() { if [ -n "$DRY" ]; then echo "    would run: $*"; else "$@"; fi; }  # run, or print

run_step() {  # run_step NAME COMMAND...: run it, log kept and shown only on failure
  local name="$1" s log; shift
  step=$((step + 1)); s=$(date +%s); log=$(mktemp)
  printf '[setup %d/%d] %s ... ' "$step" "$TOTAL" "$name"
  if [ -n "$DRY" ]; then echo; "$@"; rm -f "$log"; return; fi
  if "$@" >"$log" 2>&1; then
    echo "ok ($(( $(date +%s) - s ))s)"; [ -z "${REPORT:-}" ] || sed 's/^/    /' "$log"
    rm -f "$log"
  else
    echo "FAILED"; tail -n 40 "$log" >&2
    echo "setup failed at step $step/$TOTAL: $name (full log: $log)" >&2
    exit 1
  fi
}

skip() { step=$((step + 1)); echo "[setup $step/$TOTAL] $1 present"; }

have() {  # have PKG[==VERSION]...: all installed (at those versions); never in a dry run
  [ -z "$DRY" ] && "$VPY" -c 'import sys; from importlib.metadata import version
for n, _, v in (s.partition("==") for s in sys.argv[1:]):
    assert version(n).split("+")[0] == v or not v' "$@" >/dev/null 2>&1
}

pipi() { x "$VPY" -m pip install --disable-pip-version-check "$@"; }

system_venv() {  # .venv seeing $PY's packages, also where $PY is itself a venv or conda env
  x "$PY" -m venv --system-site-packages .venv  # (whose packages this flag does not show)
  x add_site_of_python
}
add_site_of_python() {  # a .pth file in .venv listing $PY's site-packages, after .venv's own
  "$PY" -c 'import site; print("\n".join(site.getsitepackages()))' > "$(.venv/bin/python -c \
    'import sysconfig; print(sysconfig.get_paths()["purelib"])')/system_python_site.pth"
}

probe_gpu() {  # compute capabilities of the GPUs ("9.0", "8.0;9.0"), none, or unknown
  [ -z "${SETUP_GPU:-}" ] || { echo "$SETUP_GPU"; return 0; }
  nvidia-smi -L 2>/dev/null | grep '^GPU' >/dev/null || { echo none; return 0; }  # not -q: no SIGPIPE
  nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null \
    | grep -E '^[0-9]+\.[0-9]+$' | sort -u | paste -sd';' | grep . || echo unknown
}

probe_toolkits() {  # "ROOT VERSION" of each CUDA toolkit: $CUDA_HOME, nvcc on PATH, /usr/local/cuda
  if [ -n "${SETUP_FAKE_NVCC:-}" ]; then
    [ "$SETUP_FAKE_NVCC" = none ] || echo "/usr/local/cuda $SETUP_FAKE_NVCC"; return 0
  fi
  local nvcc root
  for nvcc in ${CUDA_HOME:+"$CUDA_HOME/bin/nvcc"} "$(command -v nvcc)" /usr/local/cuda/bin/nvcc; do
    root=$(dirname "$(dirname "$nvcc")")  # a wrapper script's folder has no CUDA headers
    [ -x "$nvcc" ] && ls "$root"/include/cuda_runtime.h "$root"/targets/*/include/cuda_runtime.h \
      >/dev/null 2>&1 || continue
    echo "$root $("$nvcc" --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')"
  done
}

probe_torch() {  # "VERSION CUDA" of .venv's torch ($PYTHON's in a dry run); CUDA none: CPU build
  if [ -n "${SETUP_FAKE_TORCH:-}" ]; then echo "$SETUP_FAKE_TORCH"; return 0; fi
  "$PROBE_PY" -c 'import torch; print(torch.__version__, torch.version.cuda or "none")' 2>/dev/null
}

GPU=$(probe_gpu)
[ "$GPU" != unknown ] || die "nvidia-smi lists a GPU but not its compute capability: set" \
  "SETUP_GPU to it (e.g. SETUP_GPU=9.0 for an H100; SETUP_GPU=none for a CPU-only setup)"
[[ "$GPU" =~ ^(none|[0-9]+\.[0-9]+(;[0-9]+\.[0-9]+)*)$ ]] || die "SETUP_GPU=$GPU: allowed" \
  "values: none, or compute capabilities such as 9.0 or '8.0;9.0' (nvidia-smi's when unset)"
PROBE_PY=$([ -n "$DRY" ] && echo "$PY" || echo "$VPY")  # the venv's python; $PY's in a dry run
MMCV_CHECK='import mmcv.ops'
[ "$GPU" = none ] || MMCV_CHECK+='
import torch
x = torch.rand(2, 32, 8, 8, device="cuda")
mmcv.ops.roi_align(x, torch.tensor([[0., 0., 0., 4., 4.]], device="cuda"), (2, 2))
boxes, scores = torch.tensor([[0., 0., 4., 4.], [0., 0., 4., 5.]]).cuda(), torch.tensor([1., .9]).cuda()
assert mmcv.ops.nms(boxes, scores, 0.5)[1].tolist() == [0]'

if [ -z "$DRY" ] && [ -x "$VPY" ]; then skip "virtual environment"
elif [ -n "$TORCH_REQ" ]; then
  run_step "create virtual environment ($PY -m venv .venv)" x "$PY" -m venv .venv
else
  run_step "create virtual environment seeing $PY's torch (TORCH=system)" system_venv
fi

if [ -z "$TORCH_REQ" ]; then
  if have torch ninja setuptools; then skip "build tools"
  else run_step "install build tools (torch: $PY's, TORCH=system)" \
    pipi 'setuptools>=77.0.3,<82' wheel ninja; fi
elif have torch==2.13.0 ninja setuptools; then skip "torch 2.13.0"
else run_step "install torch 2.13.0 ($([ "$GPU" = none ] && echo CPU || echo CUDA)), build tools" \
  pipi torch==2.13.0 'setuptools>=77.0.3,<82' wheel ninja 'numpy>=1.26'; fi

if [ "$GPU" != none ] || [ -z "$TORCH_REQ" ]; then
  read -r TORCH_VERSION TORCH_CUDA < <(probe_torch) || die "torch does not import in .venv" \
    "(TORCH=system: install torch for $PY, and remove a .venv made without TORCH=system)"
  echo "    torch $TORCH_VERSION, CUDA $TORCH_CUDA; GPU compute capability: $GPU"
  [ "$GPU" = none ] || [ "$TORCH_CUDA" != none ] || die "this machine has an NVIDIA GPU but" \
    "torch $TORCH_VERSION is a CPU build. Install a CUDA build, e.g. .venv/bin/pip install" \
    "--force-reinstall torch==2.13.0 --index-url https://download.pytorch.org/whl/cu130," \
    "or use an installed one with TORCH=system; SETUP_GPU=none makes a CPU-only setup."
fi

MMCV_OK=$(have mmcv==2.1.0 && "$VPY" -c "$MMCV_CHECK" >/dev/null 2>&1 && echo 1 || true)
if [ "$GPU" != none ] && [ -z "$MMCV_OK" ]; then  # mmcv's CUDA ops need a toolkit of torch's CUDA
  ARCH=${TORCH_CUDA_ARCH_LIST:-$GPU}
  FOUND=$(probe_toolkits)
  TOOLKIT=$(awk -v m="${TORCH_CUDA%%.*}" '{split($2, v, "."); if (v[1] == m) {print $1; exit}}' \
    <<<"$FOUND")
  [ -n "$TOOLKIT" ] || die "no CUDA ${TORCH_CUDA%%.*} toolkit (nvcc) found to compile mmcv's" \
    "CUDA ops: this machine has an NVIDIA GPU (compute capability $GPU) and torch" \
    "$TORCH_VERSION is built for CUDA $TORCH_CUDA.
  Looked at \$CUDA_HOME, nvcc on PATH and /usr/local/cuda; found: $(echo "${FOUND:-none}" \
    | paste -sd, -).
  Get the CUDA $TORCH_CUDA toolkit (on a cluster: module load cuda/$TORCH_CUDA; else" \
    "https://developer.nvidia.com/cuda-downloads), set CUDA_HOME to its folder and run this" \
    "again (SETUP_GPU=none: a CPU-only setup, no training on the GPU)."
fi

mmengine_keeping_opencv() {  # mmengine asks for opencv-python: never a second OpenCV
  pipi --no-deps mmengine==0.10.7 && pipi addict matplotlib numpy pyyaml rich termcolor yapf
}

if have mmengine==0.10.7; then skip "mmengine 0.10.7"
elif [ -z "$DRY" ] && "$VPY" -c 'import cv2' >/dev/null 2>&1; then
  run_step "install mmengine 0.10.7 (OpenCV: the installed one)" mmengine_keeping_opencv
else run_step "install mmengine 0.10.7" pipi mmengine==0.10.7 $TORCH_REQ; fi

install_mmcv_cuda() {  # install_mmcv_cuda WHEEL_DIR TOOLKIT ARCH: the kept wheel, built if missing
  ls "$1"/mmcv-2.1.0-*.whl >/dev/null 2>&1 || x env FORCE_CUDA=1 MMCV_WITH_OPS=1 CUDA_HOME="$2" \
    TORCH_CUDA_ARCH_LIST="$3" MAX_JOBS="${MAX_JOBS:-$(nproc)}" "$VPY" -m pip wheel \
    --disable-pip-version-check --no-build-isolation --no-deps --no-binary mmcv --no-cache-dir \
    -w "$1" mmcv==2.1.0
  pipi --no-deps --force-reinstall "$1"/mmcv-2.1.0-*.whl
}

if [ -n "$MMCV_OK" ]; then skip "mmcv 2.1.0 with $([ "$GPU" = none ] || echo "CUDA ")ops"
elif [ "$GPU" = none ]; then
  echo "    (mmcv 2.1.0 compiles from source with its ops the first time: about 15 minutes on 2 cores; later runs use pip's wheel cache)"
  run_step "build and install mmcv 2.1.0 with ops" x env MMCV_WITH_OPS=1 \
    MAX_JOBS="${MAX_JOBS:-$(nproc)}" "$VPY" -m pip install --disable-pip-version-check \
    --no-build-isolation mmcv==2.1.0
else
  WHEELS=${CBAM_MMDET_WHEELS:-${XDG_CACHE_HOME:-$HOME/.cache}/cbam_mmdet/wheels}
  WHEELS+=/$("$PROBE_PY" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
  WHEELS+=-torch$TORCH_VERSION-cuda$TORCH_CUDA-sm${ARCH//[; ]/_}
  ls "$WHEELS"/mmcv-2.1.0-*.whl >/dev/null 2>&1 || echo "    (mmcv 2.1.0 compiles from" \
    "source with its CUDA ops the first time: about 4 minutes on 16 cores; kept in $WHEELS)"
  run_step "install mmcv 2.1.0 with CUDA ops (compute capability $ARCH, CUDA_HOME=$TOOLKIT)" \
    install_mmcv_cuda "$WHEELS" "$TOOLKIT" "$ARCH"
fi

mmdet_keeping_opencv() {  # its deps without re-resolving mmengine's opencv-python
  pipi --no-deps mmdet==3.3.0 && pipi matplotlib numpy pycocotools scipy shapely six \
    terminaltables tqdm pytest 'setuptools<82'
}

if have mmdet==3.3.0; then skip "mmdet 3.3.0"
elif [ -z "$DRY" ] && "$VPY" -c 'import cv2' >/dev/null 2>&1; then
  run_step "install mmdet 3.3.0, pycocotools, pytest" mmdet_keeping_opencv
else run_step "install mmdet 3.3.0, pycocotools, pytest" \
  pipi mmdet==3.3.0 pycocotools pytest $TORCH_REQ mmcv==2.1.0 'setuptools<82'; fi

run_step "install cbam_mmdet (editable)" pipi --no-build-isolation --no-deps -e .
run_step "build the C++ extensions (CPU kernels, Triton programs; in place)" \
  x "$VPY" setup.py -q build_ext --inplace
CHECK='import torch, mmcv, mmcv.ops, mmengine, mmdet, cbam_mmdet
from cbam_mmdet.ops.extensions import describe
print(torch.__version__, mmcv.__version__, mmdet.__version__, describe("cpu"))'
if [ "$GPU" = none ]; then run_step "check imports" x "$VPY" -c "$CHECK"
else REPORT=1 run_step "check imports; RoIAlign, NMS and CBAM on the GPU" x "$VPY" -c \
  "$CHECK; $MMCV_CHECK"'
from cbam_mmdet.models import CBAM
m = CBAM(32, ratio=4).cuda()
torch.testing.assert_close(m(x), m.reference_forward(x), rtol=1e-4, atol=1e-4)
print(torch.cuda.get_device_name(), torch.version.cuda, describe("cuda"))'; fi
[ -n "$DRY" ] && echo "[setup] dry run: nothing was run" \
  || echo "[setup] environment ready in $(( $(date +%s) - t0 ))s"
