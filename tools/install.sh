#!/usr/bin/env bash
# Build mmmila's environment from nothing: torch (CPU wheel), mmcv 2.1 with its compiled ops,
# mmengine, mmdet, mmsegmentation, mmpretrain, triton, test tools, then mmmila itself (editable).
#
#   tools/install.sh                 # into ./.venv (default; git-ignored)
#   tools/install.sh --current-env   # into the active Python environment (or MMMILA_INSTALL_ENV=current);
#                                    # an installed torch (e.g. a CUDA build) is kept as it is
#
# Idempotent: a second run checks a stamp and the imports, and returns in seconds.
# Every pin lives in requirements/constraints.txt. See docs/install.md.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONSTRAINTS="$REPO/requirements/constraints.txt"
MODE="${MMMILA_INSTALL_ENV:-venv}"
for arg in "$@"; do
  case "$arg" in
    --current-env) MODE=current ;;
    --venv) MODE=venv ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument '$arg' (expected --current-env or --venv)" >&2; exit 2 ;;
  esac
done

die() { echo "install.sh: ERROR: $*" >&2; exit 1; }
step() { echo "==> [$(date +%H:%M:%S)] $*"; }

# ---- checks that must fail with one clear sentence -------------------------------------------
BASE_PY="${PYTHON:-python3}"
command -v "$BASE_PY" >/dev/null 2>&1 || die "no '$BASE_PY' found; install Python 3.10-3.12 (3.11 recommended) or set PYTHON=/path/to/python."
PYVER="$("$BASE_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
case "$PYVER" in
  3.10|3.11|3.12) ;;
  *) die "Python $PYVER is not supported (mmcv 2.1 and the OpenMMLab 2.x stack need 3.10-3.12; 3.11 is tested); set PYTHON=/path/to/python3.11." ;;
esac
command -v g++ >/dev/null 2>&1 || die "no C++ compiler (g++) found, and mmcv's ops are compiled from source; install it with 'apt-get install -y g++'."
"$BASE_PY" - <<'EOF' || die "the Python headers (Python.h) are missing, and mmcv's ops need them; install them with 'apt-get install -y python3-dev' (or use a Python built with its headers)."
import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)
EOF

if [ "$MODE" = venv ]; then
  VENV="$REPO/.venv"
  if [ ! -x "$VENV/bin/python" ]; then
    step "creating $VENV"
    "$BASE_PY" -m venv "$VENV" || die "could not create a virtual environment at $VENV; install the venv module ('apt-get install -y python3-venv')."
  fi
  PY="$VENV/bin/python"
else
  PY="$BASE_PY"
fi
PIP=("$PY" -m pip --disable-pip-version-check)

# ---- fast path: nothing changed since the last successful run --------------------------------
STAMP_DIR="$("$PY" -c 'import sys; print(sys.prefix)')"
STAMP="$STAMP_DIR/.mmmila-install-stamp"
HASH="$(cat "$CONSTRAINTS" "$0" "$REPO/setup.py" | sha256sum | cut -c1-16)"
verify() {
  "$PY" - <<'EOF'
import torch, torchvision, mmcv, mmengine, mmdet, mmseg, mmpretrain, triton, pycocotools, mmmila
import onnx, onnxruntime, onnxscript
from mmcv.ops import nms, roi_align  # compiled ops present
EOF
}
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ] && verify >/dev/null 2>&1; then
  echo "install.sh: environment at $STAMP_DIR is up to date (stamp $HASH)."
  exit 0
fi

# ---- torch: the pinned CPU wheel, or whatever torch the user already has ---------------------
TMP_CONSTRAINTS="$(mktemp)"
trap 'rm -f "$TMP_CONSTRAINTS"' EXIT
torch_status() {
  "$PY" - <<'EOF' 2>/dev/null
try:
    import torch
    torch.zeros(2) + 1
    print('ok', torch.__version__.split('+')[0])
except ModuleNotFoundError:
    print('missing')
except Exception as err:  # installed but unusable: say why, in one line
    print('broken', type(err).__name__ + ':', (str(err).splitlines() or [''])[0][:200])
EOF
}
broken_torch() {
  die "the torch in $("$PY" -c 'import sys; print(sys.prefix)') cannot be used (${1#broken }); reinstall it ('$PY -m pip install --force-reinstall torch==2.13.0', or your CUDA build) and run this script again."
}
STATUS="$(torch_status)"
case "$STATUS" in broken*) broken_torch "$STATUS" ;; esac
HAVE_TORCH="${STATUS#ok }"; [ "${STATUS%% *}" = ok ] || HAVE_TORCH=""
if [ "$MODE" = current ] && [ -n "$HAVE_TORCH" ]; then
  step "keeping the installed torch $HAVE_TORCH"
  sed -e "s/^torch==[^ ]*/torch==$HAVE_TORCH/" -e '/^torchvision==/d' "$CONSTRAINTS" > "$TMP_CONSTRAINTS"
else
  cp "$CONSTRAINTS" "$TMP_CONSTRAINTS"
  if [ "$HAVE_TORCH" != "2.13.0" ]; then
    step "installing torch 2.13.0"
    "${PIP[@]}" install -c "$TMP_CONSTRAINTS" "torch==2.13.0" \
      || die "torch 2.13.0 could not be installed; install torch 2.13.0 for your platform yourself (docs/install.md says how), then run '$0 --current-env'."
  fi
fi
STATUS="$(torch_status)"
case "$STATUS" in ok*) ;; *) broken_torch "$STATUS" ;; esac
PIPC=("${PIP[@]}" install -c "$TMP_CONSTRAINTS")

step "build tools (setuptools 80.9, wheel, ninja)"
"${PIPC[@]}" setuptools wheel ninja

step "numpy, triton, opencv, ONNX export tools and pure-Python dependencies"
"${PIPC[@]}" "numpy<2.4" triton pycocotools fvcore pytest scikit-image opencv-python onnx onnxruntime onnxscript

# torchvision: the PyPI wheel for torch 2.13 is a CUDA build whose ops cannot load beside the CPU
# torch; --no-deps so it never pulls another torch. A torchvision that imports is never touched.
if ! "$PY" -c 'import torchvision' >/dev/null 2>&1; then
  if ! "$PY" -m pip show torchvision >/dev/null 2>&1; then
    step "installing torchvision (no deps)"
    "${PIPC[@]}" --no-deps torchvision
  fi
  if ! "$PY" -c 'import torchvision' >/dev/null 2>&1; then
    step "guarding torchvision's fake-op registrations (its compiled ops cannot load beside this torch)"
    "$PY" "$REPO/tools/misc/patch_torchvision.py" || die "torchvision cannot be imported and could not be repaired; install a torchvision built for torch $("$PY" -c 'import torch; print(torch.__version__)')."
  fi
fi

# mmcv: built once from the sdist with its ops; pip's wheel cache keeps the wheel for next time.
if ! "$PY" -c 'from mmcv.ops import nms, roi_align' >/dev/null 2>&1; then
  step "mmcv 2.1.0 with ops (first build on a machine: ~10 min; later: seconds from pip's wheel cache)"
  MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" CFLAGS="${CFLAGS:--g0}" CXXFLAGS="${CXXFLAGS:--g0}" \
    "${PIPC[@]}" --no-build-isolation mmcv \
    || die "mmcv 2.1.0 failed to build; the lines above show the compiler error (check that g++ and the Python headers are installed)."
fi

step "mmengine, mmdet, mmsegmentation, mmpretrain"
# ftfy and regex: mmseg.utils imports its text tokenizer unconditionally, mmseg's wheel does not require them.
"${PIPC[@]}" mmengine mmdet mmsegmentation mmpretrain ftfy regex

step "mmmila (editable)"
"${PIPC[@]}" --no-build-isolation --no-deps -e "$REPO"

step "verifying"
verify || die "the environment was installed but an import failed (see the traceback above)."
echo "$HASH" > "$STAMP"
echo "install.sh: done. Python: $PY"
