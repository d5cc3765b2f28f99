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
TOOLS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CONFIG=$1
GPUS=$2
shift 2
exec bash "$TOOLS/dist_launch.sh" "$TOOLS/train.py" "$GPUS" "$CONFIG" "$@"
