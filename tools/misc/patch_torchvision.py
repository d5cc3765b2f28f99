"""Make a CUDA-built torchvision importable beside a CPU-only torch.

PyPI's torchvision 0.28 is a CUDA build. Beside the CPU torch its compiled ops cannot load, and
``import torchvision`` then dies in ``torchvision/_meta_registrations.py``, whose
``register_fake("torchvision::nms")`` / ``("torchvision::qnms")`` decorators run even when the ops
library is missing. This script guards exactly those decorators with ``_has_ops()``; transforms and
box utilities then work (OpenMMLab uses mmcv's NMS/RoIAlign, not torchvision's). It edits nothing
if torchvision already imports, and it is idempotent.
"""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

GUARD = '(lambda f: f) if not torchvision.extension._has_ops() else '
OPS = ('torchvision::nms', 'torchvision::qnms')


def imports_ok() -> bool:
    return subprocess.run([sys.executable, '-c', 'import torchvision'], capture_output=True).returncode == 0


def main() -> int:
    if imports_ok():
        print('patch_torchvision: torchvision imports; nothing to do.')
        return 0
    spec = importlib.util.find_spec('torchvision')
    if spec is None or not spec.submodule_search_locations:
        print('patch_torchvision: torchvision is not installed.', file=sys.stderr)
        return 1
    path = Path(list(spec.submodule_search_locations)[0]) / '_meta_registrations.py'
    src = path.read_text()
    count = 0
    for op in OPS:
        pattern = re.compile(r'^(\s*)@((?:torch\.library\.)?register_fake\(\s*["\']' + re.escape(op) + r'["\']\s*\))', re.M)
        src, n = pattern.subn(lambda m: f'{m.group(1)}@({GUARD}{m.group(2)})', src)
        count += n
    if count:
        path.write_text(src)
        print(f'patch_torchvision: guarded {count} registration(s) in {path}')
    if not imports_ok():
        err = subprocess.run([sys.executable, '-c', 'import torchvision'], capture_output=True, text=True).stderr
        print('patch_torchvision: torchvision still fails to import:\n' + err[-2000:], file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
