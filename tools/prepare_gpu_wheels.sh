#!/usr/bin/env bash
# Download, on a machine with PyPI access, the pure-Python wheels that tools/gpu_check.sh needs on the
# GPU image (Python 3.12 with torch, triton, numpy, timm and pytest; no mmengine, no network) into
# .gpu_wheels/ (git-ignored), for the device run to carry. Nothing is installed here.
#
#   bash tools/prepare_gpu_wheels.sh            # into ./.gpu_wheels (replaced)
#   bash tools/prepare_gpu_wheels.sh DIR        # into DIR
#   GPU_PYTHON=3.11 bash tools/prepare_gpu_wheels.sh DIR   # wheels for another Python (for a local check)
#
# The list: mmengine and what `import mmmila` and the MILA backbone import through it, beyond what
# the image has: addict, termcolor, yapf (+ platformdirs), rich (+ markdown-it-py, mdurl, pygments),
# PyYAML (the one compiled wheel) and packaging (pytest and timm bring it too; a wheel whose modules
# already import is not used). tests/test_tools/test_gpu_check.py checks that a dry run imports no
# other third-party module. mmengine also declares matplotlib (never imported on this path) and
# opencv-python (a 50 MB wheel; `cv2` is imported once, by mmengine's visualisation hook, and the
# kit replaces it with a placeholder): both are left out on purpose. Versions: those of this
# project's environment (requirements/constraints.txt for mmengine).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${1:-$REPO/.gpu_wheels}"
PY="${PYTHON:-python3}"
TARGET="${GPU_PYTHON:-3.12}"      # the GPU image's Python
ABI="cp${TARGET/./}"
WHEELS=(
  mmengine==0.10.7
  addict==2.4.0
  termcolor==3.3.0
  yapf==0.43.0
  platformdirs==4.14.9
  rich==15.0.0
  markdown-it-py==4.3.0
  mdurl==0.1.2
  pygments==2.21.0
  pyyaml==6.0.4
  packaging==26.4
)
rm -rf "$DEST"
mkdir -p "$DEST"
"$PY" -m pip download --disable-pip-version-check --quiet --no-deps --only-binary=:all: \
  --python-version "$TARGET" --implementation cp --abi "$ABI" --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 --platform any -d "$DEST" "${WHEELS[@]}"
echo "prepare_gpu_wheels.sh: $(ls "$DEST" | wc -l) wheels, $(du -sh "$DEST" | cut -f1) in $DEST:"
ls -1 "$DEST"
