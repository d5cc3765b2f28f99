#!/usr/bin/env bash
# mmmila's GPU validation kit: correctness and speed of the Triton path on a CUDA GPU, in one command.
#
#   bash tools/gpu_check.sh --out DIR [--budget-s S] [--only SECTION ...]   # on a CUDA machine
#   bash tools/gpu_check.sh --out DIR --dry-run                             # same code paths on CPU
#
# Needs Python with torch, triton and numpy (timm optional); mmengine and its pure-Python needs come
# from .gpu_wheels/ (tools/prepare_gpu_wheels.sh fills it). Nothing is installed: the Python part
# stages this working tree and the wheels in a temporary folder. Results: DIR/gpu_check.{json,md,log}.
# See docs/gpu.md (and `python tools/gpu_check.py --help`) for the sections and the device command.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null 2>&1 || { echo "gpu_check.sh: ERROR: no '$PY' found; set PYTHON=/path/to/python." >&2; exit 2; }
exec "$PY" "$REPO/tools/gpu_check.py" "$@"
