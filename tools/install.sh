#!/usr/bin/env bash
# Build mmmila's environment from nothing: torch (CPU wheel), mmcv with its compiled ops, mmengine,
# mmdet, mmsegmentation, mmpretrain, triton, test tools, then mmmila itself (editable).
#
#   tools/install.sh                 # OpenMMLab's releases (mmcv 2.1, mmdet 3.3, ...) into ./.venv
#   tools/install.sh --stack onedl   # OneDL Lab's maintained forks (onedl-mmcv 2.3, ...) into ./.venv-onedl
#   tools/install.sh --current-env   # into the active Python environment (or MMMILA_INSTALL_ENV=current);
#                                    # an installed torch (e.g. a CUDA build) is kept as it is, and
#                                    # without --stack the stack the environment already holds is used
#
# --stack openmmlab|onedl (or MMMILA_STACK): which OpenMMLab stack; the two install under the same
# import names, so one environment holds one of them, and the script never installs one over the other.
# Idempotent: a second run checks a stamp and the imports, and returns in seconds.
# Every pin lives in requirements/constraints.txt (openmmlab) or constraints-onedl.txt. See docs/install.md.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE="${MMMILA_INSTALL_ENV:-venv}"
STACK="${MMMILA_STACK:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --current-env) MODE=current ;;
    --venv) MODE=venv ;;
    --stack) [ $# -ge 2 ] || { echo "install.sh: --stack needs a value (openmmlab or onedl)" >&2; exit 2; }
             STACK="$2"; shift ;;
    --stack=*) STACK="${1#--stack=}" ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument '$1' (expected --current-env, --venv or --stack openmmlab|onedl)" >&2; exit 2 ;;
  esac
  shift
done
case "$STACK" in
  ''|openmmlab|onedl) ;;
  *) echo "install.sh: unknown stack '$STACK' (expected openmmlab or onedl)" >&2; exit 2 ;;
esac

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
  [ -n "$STACK" ] || STACK=openmmlab
  if [ "$STACK" = onedl ]; then VENV="$REPO/.venv-onedl"; else VENV="$REPO/.venv"; fi
  if [ ! -x "$VENV/bin/python" ]; then
    step "creating $VENV"
    "$BASE_PY" -m venv "$VENV" || die "could not create a virtual environment at $VENV; install the venv module ('apt-get install -y python3-venv')."
  fi
  PY="$VENV/bin/python"
else
  PY="$BASE_PY"
fi
PIP=("$PY" -m pip --disable-pip-version-check)

# ---- which stack the environment holds: never one over the other --------------------------------
# Prints "openmmlab NAMES", "onedl NAMES", "mixed NAMES" or "none".
env_stack() {
  "$PY" - <<'EOF'
from importlib import metadata
original = ['mmengine', 'mmcv', 'mmcv-full', 'mmcv-lite', 'mmdet', 'mmsegmentation', 'mmpretrain']
onedl = ['onedl-mmengine', 'onedl-mmcv', 'onedl-mmdetection', 'onedl-mmsegmentation', 'onedl-mmpretrain']
def found(names):
    out = []
    for name in names:
        try:
            out.append(f'{name}=={metadata.version(name)}')
        except metadata.PackageNotFoundError:
            pass
    return out
a, b = found(original), found(onedl)
print(('mixed' if a and b else 'openmmlab' if a else 'onedl' if b else 'none'), ', '.join(a + b))
EOF
}
HELD="$(env_stack)"
HELD_STACK="${HELD%% *}"
HELD_NAMES="${HELD#* }"
[ "$HELD_STACK" != mixed ] || die "the environment at $("$PY" -c 'import sys; print(sys.prefix)') holds both OpenMMLab's and OneDL's packages ($HELD_NAMES), which install under the same import names; uninstall one set (pip uninstall) or use a fresh environment."
if [ -z "$STACK" ]; then  # --current-env without --stack: the stack it holds, else OpenMMLab's
  if [ "$HELD_STACK" = onedl ]; then STACK=onedl; else STACK=openmmlab; fi
fi
if [ "$HELD_STACK" != none ] && [ "$HELD_STACK" != "$STACK" ]; then
  other="$([ "$STACK" = onedl ] && echo "--stack openmmlab" || echo "--stack onedl")"
  die "the environment at $("$PY" -c 'import sys; print(sys.prefix)') holds the $HELD_STACK stack ($HELD_NAMES), and installing $STACK's packages over it would mix two stacks under the same import names; run with $other, use another environment (the default venv of --stack onedl is ./.venv-onedl), or uninstall those packages first."
fi
if [ "$STACK" = onedl ]; then
  CONSTRAINTS="$REPO/requirements/constraints-onedl.txt"
else
  CONSTRAINTS="$REPO/requirements/constraints.txt"
fi

# ---- fast path: nothing changed since the last successful run --------------------------------
STAMP_DIR="$("$PY" -c 'import sys; print(sys.prefix)')"
STAMP="$STAMP_DIR/.mmmila-install-stamp"
# the compiled CPU kernels' sources too: a change to them is built again (mmmila._C, in the source tree)
HASH="$( (echo "$STACK"; cat "$CONSTRAINTS" "$0" "$REPO/setup.py" "$REPO"/mmmila/ops/csrc/*) | sha256sum | cut -c1-16)"
verify() {
  "$PY" - <<'EOF' || return 1
import torch, torchvision, mmcv, mmengine, mmdet, mmseg, mmpretrain, triton, pycocotools, mmmila
import onnx, onnxruntime, onnxscript
from mmcv.ops import nms, roi_align  # compiled ops present
import mmmila._C  # mmmila's compiled CPU kernels, built for this torch
EOF
  [ "$(env_stack | cut -d' ' -f1)" = "$STACK" ] || return 1
  "${PIP[@]}" check
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
"${PIPC[@]}" numpy triton pycocotools fvcore pytest scikit-image opencv-python onnx onnxruntime onnxscript

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
if [ "$STACK" = onedl ]; then
  MMCV=onedl-mmcv
  MM_PACKAGES=(onedl-mmengine onedl-mmdetection onedl-mmsegmentation onedl-mmpretrain)
  step "OneDL's build requirements (packaging, click: their sdists build against this environment)"
  "${PIPC[@]}" packaging click
else
  MMCV=mmcv
  MM_PACKAGES=(mmengine mmdet mmsegmentation mmpretrain)
fi
if ! "$PY" -c 'from mmcv.ops import nms, roi_align' >/dev/null 2>&1; then
  step "$MMCV $(sed -n "s/^$MMCV==\([^ ]*\).*/\1/p" "$CONSTRAINTS") with ops (first build on a machine: 10-16 min; later: seconds from pip's wheel cache)"
  MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" CFLAGS="${CFLAGS:--g0}" CXXFLAGS="${CXXFLAGS:--g0}" \
    "${PIPC[@]}" --no-build-isolation "$MMCV" \
    || die "$MMCV failed to build; the lines above show the compiler error (check that g++ and the Python headers are installed)."
fi

step "${MM_PACKAGES[*]}"
# ftfy and regex: mmseg.utils imports its text tokenizer unconditionally, mmseg 1.2's wheel does not require them.
# --no-build-isolation: OneDL's packages are source distributions; they build against this environment.
"${PIPC[@]}" --no-build-isolation "${MM_PACKAGES[@]}" ftfy regex

step "mmmila (editable)"
"${PIPC[@]}" --no-build-isolation --no-deps -e "$REPO"

step "verifying"
verify || die "the environment was installed but an import failed, it holds another stack, or 'pip check' found a conflict (see above; '$PY -m pip check' repeats it)."
echo "$HASH" > "$STAMP"
echo "install.sh: done ($STACK stack). Python: $PY"
