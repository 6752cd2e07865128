#!/usr/bin/env bash
# bash tools/dist_train.sh CONFIG GPUS [train.py options]
# On machines without CUDA, GPUS is the number of CPU processes; add
# --cfg-options env_cfg.dist_cfg.backend=gloo (see cbam_mmdet/apis/distributed.py).
# PYTHON (default: python) is the interpreter; PORT, MASTER_ADDR, NNODES, NODE_RANK as torchrun.
# TOOL (default: train.py) is the tool it runs (tools/dist_test.sh sets test.py).
PYTHONPATH="$(dirname "$0")/..":${PYTHONPATH:-} \
exec "${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --nproc_per_node="$2" \
    --master_port="${PORT:-29500}" "$(dirname "$0")/${TOOL:-train.py}" "$1" \
    --launcher pytorch "${@:3}"
