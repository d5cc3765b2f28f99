#!/usr/bin/env bash
# Evaluate CHECKPOINT on the test set of an mmmila config, on GPUS processes per node.
#
#   tools/test.sh CONFIG CHECKPOINT GPUS [--work-dir DIR] [--format-only --out-dir DIR] [--tta]
#                 [--show-dir DIR] [--cfg-options K=V ...]
#
# Detection reports COCO bbox/segm AP; with --format-only it writes DIR/<config>.bbox.json and
# .segm.json (the COCO test-dev submission files) instead. GPUS > 1 (or NNODES > 1) starts
# torchrun; NNODES, NODE_RANK, MASTER_ADDR and PORT (default 29500) as in tools/train.sh.
set -euo pipefail

if [[ $# -lt 3 ]]; then
    echo "usage: $0 CONFIG CHECKPOINT GPUS [test.py args...]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
shift 3
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
    exec "$PYTHON" "$TOOLS/test.py" "$CONFIG" "$CHECKPOINT" --launcher none "$@"
fi
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" --master_port="$PORT" \
    "$TOOLS/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
