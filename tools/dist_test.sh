#!/usr/bin/env bash
# bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py options]
# tools/dist_train.sh running test.py (the same environment variables; on machines without
# CUDA add --cfg-options env_cfg.dist_cfg.backend=gloo).
TOOL=test.py exec bash "$(dirname "$0")/dist_train.sh" "$1" "$3" "$2" "${@:4}"
