"""tools/install.sh stops early with one clear sentence on an unusable machine (no installs happen)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from ..conftest import REPO

SCRIPT = REPO / 'tools' / 'install.sh'


def run(env_extra: dict, path: str | None = None, args=()) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith('MMMILA_')}
    env.update(env_extra)
    if path is not None:
        env['PATH'] = path
    return subprocess.run(['bash', str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=900)


def error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and lines, proc.stdout + proc.stderr
    return lines[-1]


def test_unsupported_python(tmp_path):
    fake = tmp_path / 'python3.8'
    fake.write_text('#!/bin/sh\necho 3.8\n')
    fake.chmod(0o755)
    line = error_line(run({'PYTHON': str(fake)}))
    assert line.startswith('install.sh: ERROR: Python 3.8 is not supported') and '3.11' in line


def test_missing_python():
    line = error_line(run({'PYTHON': '/nonexistent/python3'}))
    assert "no '/nonexistent/python3' found" in line


def test_missing_compiler(tmp_path):
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    for tool in ('bash', 'dirname', 'cat', 'sha256sum', 'cut', 'mktemp', 'sed', 'rm', 'cp', 'date', 'env'):
        found = shutil.which(tool)
        if found:
            (bindir / tool).symlink_to(found)
    (bindir / 'python3').symlink_to(sys.executable)
    line = error_line(run({}, path=str(bindir)))
    assert 'no C++ compiler (g++) found' in line and 'apt-get install -y g++' in line


def test_unusable_torch_in_current_env(tmp_path):
    env_dir = tmp_path / 'env'
    venv.create(env_dir, with_pip=False)
    py = env_dir / 'bin' / 'python'
    site = next((env_dir / 'lib').glob('python3*/site-packages'))
    (site / 'torch').mkdir()
    (site / 'torch' / '__init__.py').write_text("raise OSError('libtorch_cpu.so: cannot open shared object file')\n")
    line = error_line(run({'PYTHON': str(py)}, args=['--current-env']))
    assert 'cannot be used (OSError: libtorch_cpu.so: cannot open shared object file)' in line
    assert 'reinstall it' in line
    assert not (site / 'mmcv').exists()  # stopped before installing anything


def test_unknown_argument():
    proc = run({}, args=['--cuda'])
    assert proc.returncode == 2 and "unknown argument '--cuda'" in proc.stderr
    proc = run({}, args=['--stack', 'mmlab'])
    assert proc.returncode == 2 and "unknown stack 'mmlab' (expected openmmlab or onedl)" in proc.stderr


def env_holding(tmp_path, *distributions: str) -> Path:
    """A bare environment whose metadata says these distributions (name==version) are installed."""
    env_dir = tmp_path / 'env'
    venv.create(env_dir, with_pip=False)
    site = next((env_dir / 'lib').glob('python3*/site-packages'))
    for dist in distributions:
        name, version = dist.split('==')
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / 'METADATA').write_text(f'Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n')
    return env_dir / 'bin' / 'python'


@pytest.mark.parametrize('held, asked', [(('mmengine==0.10.7', 'mmcv==2.1.0'), 'onedl'),
                                         (('onedl-mmengine==0.10.12',), 'openmmlab')])
def test_never_installs_one_stack_over_the_other(tmp_path, held, asked):
    py = env_holding(tmp_path, *held)
    line = error_line(run({'PYTHON': str(py)}, args=['--current-env', '--stack', asked]))
    other = 'onedl' if asked == 'openmmlab' else 'openmmlab'
    assert f'holds the {other} stack ({", ".join(held)})' in line and f'--stack {other}' in line
    assert not list(py.parent.parent.glob('lib/python3*/site-packages/torch'))  # nothing installed


def test_mixed_environment_is_refused(tmp_path):
    py = env_holding(tmp_path, 'mmengine==0.10.7', 'onedl-mmcv==2.3.6')
    line = error_line(run({'PYTHON': str(py)}, args=['--current-env']))
    assert "holds both OpenMMLab's and OneDL's packages (mmengine==0.10.7, onedl-mmcv==2.3.6)" in line


def running_stack() -> tuple[str, Path]:
    """The stack of the environment running the tests, and the ./.venv* that install.sh builds for it."""
    import importlib.metadata
    try:
        importlib.metadata.version('onedl-mmengine')
        return 'onedl', REPO / '.venv-onedl'
    except importlib.metadata.PackageNotFoundError:
        return 'openmmlab', REPO / '.venv'


@pytest.mark.skipif(Path(sys.prefix).resolve() != running_stack()[1].resolve()
                    or not (running_stack()[1] / '.mmmila-install-stamp').exists(),
                    reason="the idempotence check needs the ./.venv (or ./.venv-onedl) that make test builds")
def test_second_run_is_a_no_op():
    proc = run({}, args=['--stack', running_stack()[0]])
    assert proc.returncode == 0, proc.stderr
    assert 'is up to date' in proc.stdout
