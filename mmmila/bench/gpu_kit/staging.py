"""The GPU kit's staging: a checkout's ``mmmila`` and the carried wheels made importable, without pip.

Standard library only, and the one place of the project that edits ``sys.path`` and
``sys.modules``: the GPU machine has torch and triton but not mmengine, which ``import mmmila``
needs, so the command line loads this file by its path (importing it as a module of ``mmmila``
would run ``mmmila/__init__.py`` first) and stages before anything imports mmmila.
"""
from __future__ import annotations

import importlib
import importlib.util
import shutil
import sys
import types
import zipfile
from pathlib import Path

# Modules that mmengine imports at import time but nothing the kit runs uses, with the reason.
PLACEHOLDERS = {'cv2': 'mmengine.runner imports mmengine.hooks, whose visualisation hook imports cv2; '
                       "OpenCV's 50 MB wheel would not fit the device run's carry limit"}


def wheel_modules(wheel: zipfile.ZipFile) -> list[str]:
    """Top-level importable names of a wheel (packages and single-file modules)."""
    names = set()
    for entry in wheel.namelist():
        top = entry.split('/')[0]
        if top.endswith(('.dist-info', '.data')) or top.endswith('.pth'):
            continue
        if '/' in entry or top.endswith('.py') or '.cpython-' in top or top.endswith('.so'):
            names.add(top.split('.')[0])
    return sorted(names)


def importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


class Placeholder(types.ModuleType):
    """A module that imports but has nothing: any attribute use raises, naming why it is absent."""

    def __getattr__(self, attr):
        raise AttributeError(f'{self.__name__}.{attr}: {self.__name__} is not installed here; the GPU kit '
                             f'put an empty placeholder in its place ({PLACEHOLDERS[self.__name__]})')


def stage_imports(stage: Path, wheels: Path, repo: Path) -> dict:
    """Copy ``repo``'s mmmila (with ``kernels/`` as ``mmmila.kernels``, as setup.py installs it) under
    ``stage``, extract the wheels of ``wheels`` whose modules do not import yet, put both first on
    ``sys.path``, and a :class:`Placeholder` in ``sys.modules`` for each of :data:`PLACEHOLDERS`
    that does not import.

    Returns:
        dict: ``staged`` (wheels extracted), ``present`` (wheels whose modules already import),
        ``placeholders`` (modules replaced), ``path`` (the folders put first on ``sys.path``).
    """
    site = stage / 'site'
    site.mkdir(parents=True, exist_ok=True)
    staged, present = [], []
    for whl in sorted(wheels.glob('*.whl')) if wheels.is_dir() else []:
        with zipfile.ZipFile(whl) as zf:
            modules = wheel_modules(zf)
            if modules and all(importable(m) for m in modules):
                present.append(whl.name)
                continue
            zf.extractall(site)
            staged.append(whl.name)
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc')
    shutil.copytree(repo / 'mmmila', stage / 'mmmila', ignore=ignore)
    shutil.copytree(repo / 'kernels', stage / 'mmmila' / 'kernels', ignore=ignore)
    sys.path[:0] = [str(stage), str(site)]
    importlib.invalidate_caches()
    placeholders = [name for name in PLACEHOLDERS if not importable(name)]
    for name in placeholders:
        sys.modules[name] = Placeholder(name)
    return dict(staged=staged, present=present, placeholders=placeholders, path=[str(stage), str(site)])
