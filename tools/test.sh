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
TOOLS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
shift 3
exec bash "$TOOLS/dist_launch.sh" "$TOOLS/test.py" "$GPUS" "$CONFIG" "$CHECKPOINT" "$@"
