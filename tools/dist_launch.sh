#!/usr/bin/env bash
# Shared by tools/train.sh and tools/test.sh: run SCRIPT on GPUS processes per node.
#
#   tools/dist_launch.sh SCRIPT GPUS [SCRIPT args...]
#
# GPUS > 1 (or NNODES > 1) starts torchrun with that many processes per node and --launcher pytorch
# (DDP; over gloo on the CPU when no CUDA GPU is present); GPUS = 1 on one node runs one plain
# process with --launcher none. NNODES, NODE_RANK, MASTER_ADDR and PORT (default 29500) select a
# multi-node rendezvous; PYTHON the interpreter (default: python on PATH).
set -euo pipefail

SCRIPT=$1
GPUS=$2
shift 2
if ! [[ "$GPUS" =~ ^[1-9][0-9]*$ ]]; then
    echo "$(basename "$SCRIPT" .py).sh: GPUS must be a positive integer (processes per node), got '$GPUS'" >&2
    exit 2
fi
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PYTHON=${PYTHON:-python}

if [[ "$GPUS" -eq 1 && "$NNODES" -eq 1 ]]; then
    exec "$PYTHON" "$SCRIPT" --launcher none "$@"
fi
# Check the config and its inputs once, in one process, before torchrun starts GPUS of them: a wrong
# path stops here with one line instead of once per process inside torchrun's failure report.
"$PYTHON" "$SCRIPT" --check-only "$@" || exit $?
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" --master_port="$PORT" \
    "$SCRIPT" --launcher pytorch --no-input-check "$@"
