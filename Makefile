# Two commands do everything on a fresh machine; each sets up .venv/ first when it is
# missing or older than the files that define it.
#   make demo   the main job: baseline vs SE vs CBAM on the embedded dataset; on the GPU
#               (fp16 AMP) where there is one and mmcv has its CUDA ops, else the CPU
#   make test   the test suite
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-complete

.PHONY: setup test test-all demo
setup: $(STAMP)

$(STAMP): setup.py tools/setup_env.sh cbam_mmdet/ops/csrc/cbam_cpu_kernels.cpp \
		cbam_mmdet/ops/csrc/triton_programs.cpp
	bash tools/setup_env.sh
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

test-all: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow" tests

demo: $(STAMP)
	$(PY) tools/reproduce.py --preset demo --work-dir work_dirs/demo --device auto --amp
