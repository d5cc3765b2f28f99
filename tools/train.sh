#!/usr/bin/env bash
# Train an mmmila config (detection, segmentation or classification) on GPUS processes per node.
#
#   tools/train.sh CONFIG GPUS [--work-dir DIR] [--resume [CKPT]] [--amp] [--cfg-options K=V ...]
#
# GPUS > 1 (or NNODES > 1) starts torchrun with that many processes per node (DDP; over gloo on
# the CPU when no CUDA GPU is present); GPUS = 1 on one node runs a single plain process.
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR and PORT (default 29500) select the rendezvous.
# PYTHON selects the interpreter (default: python on PATH).
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: $0 CONFIG GPUS [train.py args...]" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
shift 2
if ! [[ "$GPUS" =~ ^[1-9][0-9]*$ ]]; then
    echo "$0: GPUS must be a positive integer (processes per node), got '$GPUS'" >&2
    exit 2
fi
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PYTHON=${PYTHON:-python}
TOOLS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [[ "$GPUS" -eq 1 && "$NNODES" -eq 1 ]]; then
    exec "$PYTHON" "$TOOLS/train.py" "$CONFIG" --launcher none "$@"
fi
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" --master_port="$PORT" \
    "$TOOLS/train.py" "$CONFIG" --launcher pytorch "$@"
