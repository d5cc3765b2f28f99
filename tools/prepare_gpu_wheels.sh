#!/usr/bin/env bash
# Download, on a machine with PyPI access, the pure-Python wheels that tools/gpu_check.sh needs on the
# GPU image (Python 3.12 with torch, triton, numpy, timm and pytest; no mmengine, no network) into
# .gpu_wheels/ (git-ignored), for the device run to carry. Nothing is installed here.
#
#   bash tools/prepare_gpu_wheels.sh            # into ./.gpu_wheels (replaced)
#   bash tools/prepare_gpu_wheels.sh DIR        # into DIR
#   GPU_PYTHON=3.11 bash tools/prepare_gpu_wheels.sh DIR   # wheels for another Python (for a local check)
#
# The list is what `import mmmila` and the MILA backbone import through mmengine (checked by
# tests/test_tools/test_gpu_check.py in a subprocess where only these and torch/triton/numpy
# import): mmengine with addict, termcolor, yapf (+ platformdirs), rich (+ markdown-it-py, mdurl,
# pygments) and PyYAML. mmengine also declares matplotlib and opencv-python (~70 MB), which only its
# visualisation code imports: they are left out on purpose. Versions: those of this project's
# environment (requirements/constraints.txt for mmengine); 3.12 wheels for manylinux x86_64.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${1:-$REPO/.gpu_wheels}"
PY="${PYTHON:-python3}"
TARGET="${GPU_PYTHON:-3.12}"      # the GPU image's Python
ABI="cp${TARGET/./}"
WHEELS=(
  mmengine==0.10.7
  addict==2.4.0
  termcolor==3.2.0
  yapf==0.43.0
  platformdirs==4.5.0
  rich==14.2.0
  markdown-it-py==4.0.0
  mdurl==0.1.2
  pygments==2.19.2
  pyyaml==6.0.3
)
rm -rf "$DEST"
mkdir -p "$DEST"
"$PY" -m pip download --disable-pip-version-check --quiet --no-deps --only-binary=:all: \
  --python-version "$TARGET" --implementation cp --abi "$ABI" --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 --platform any -d "$DEST" "${WHEELS[@]}"
echo "prepare_gpu_wheels.sh: $(ls "$DEST" | wc -l) wheels, $(du -sh "$DEST" | cut -f1) in $DEST:"
ls -1 "$DEST"
