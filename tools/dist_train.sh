#!/usr/bin/env bash
# bash tools/dist_train.sh CONFIG GPUS [train.py options]
# On machines without CUDA, GPUS is the number of CPU processes; add
# --cfg-options env_cfg.dist_cfg.backend=gloo (see cbam_mmdet/apis/cpu_distributed.py).
# PYTHON (default: python) is the interpreter; PORT, MASTER_ADDR, NNODES, NODE_RANK as torchrun.
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}
PYTHONPATH="$(dirname "$0")/..":${PYTHONPATH:-} \
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" --master_port="$PORT" \
    "$(dirname "$0")/train.py" "$CONFIG" --launcher pytorch "${@:3}"
