"""The repository stands on its own: no file names a path outside it, and the test data lives inside.

A user clones mmmila and runs ``make test`` with nothing beside the checkout, so no file of the
project may read, cite or build a path outside the repository.
"""
from __future__ import annotations

import importlib
import subprocess
from pathlib import Path

import pytest

from .conftest import DATA, FIXTURE, AUTHORS_KEYS, REPO

# Spelled in pieces, so that this file does not match its own patterns.
FORBIDDEN = ['..' + '/shared', 'shared' + '/spec', 'shared' + '/fixtures', 'MMMILA_' + 'SHARED',
             # background notes of the developers that never ship with the project
             'KERNEL_MATH' + '.md', 'MILA' + '.md', 'RECIPES' + '.md', 'PERF_ANCHORS' + '.md',
             'STYLE' + '.md', 'INSTALL' + '_NOTES']
BINARY_SUFFIXES = {'.pt', '.pth', '.png', '.jpg', '.jpeg', '.whl', '.gz', '.zip'}
SKIP_DIRS = {'.git', '.venv', 'work_dirs', 'data', '__pycache__', '.pytest_cache', 'build'}


def project_files() -> list[Path]:
    """The tracked files (``git ls-files``), or every file of the tree outside ignored folders."""
    try:
        out = subprocess.run(['git', 'ls-files', '-z'], cwd=REPO, capture_output=True, check=True)
        files = [REPO / name for name in out.stdout.decode().split('\0') if name]
    except (OSError, subprocess.CalledProcessError):   # an exported tree without git
        files = [p for p in REPO.rglob('*')
                 if p.is_file() and not SKIP_DIRS & set(p.relative_to(REPO).parts[:-1])]
    return [p for p in files if p.is_file() and p.suffix.lower() not in BINARY_SUFFIXES]


def test_no_file_names_a_path_outside_the_repository():
    files = project_files()
    assert len(files) > 100, f'only {len(files)} files found under {REPO}'
    hits = []
    for path in files:
        try:
            text = path.read_text(encoding='utf-8')
        except UnicodeDecodeError:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            hits += [f'{path.relative_to(REPO)}:{lineno}: {word!r}' for word in FORBIDDEN if word in line]
    assert not hits, 'files that name a path or a document outside the repository:\n' + '\n'.join(hits)


def test_the_scan_finds_a_planted_reference(tmp_path, monkeypatch):
    """The check above can fail: a file citing a path outside the repository is reported."""
    planted = tmp_path / 'notes.md'
    planted.write_text('see ' + '..' + '/shared/' + 'spec/X for the maths\n')
    import tests.test_self_contained as me
    monkeypatch.setattr(me, 'project_files', lambda: [planted] * 101)
    monkeypatch.setattr(me, 'REPO', tmp_path)
    with pytest.raises(AssertionError, match='notes.md:1'):
        test_no_file_names_a_path_outside_the_repository()


def test_every_conftest_path_is_inside_the_repository():
    """The conftests build their data paths from the repository, never from its parent."""
    repo = REPO.resolve()
    for path in (DATA, FIXTURE, AUTHORS_KEYS):
        assert path.resolve().is_relative_to(repo), path
        assert path.exists(), f'{path} is missing from the checkout'
    conftests = sorted((REPO / 'tests').rglob('conftest.py'))
    assert len(conftests) >= 4
    for conftest in conftests:
        rel = conftest.relative_to(REPO).with_suffix('')
        module = importlib.import_module('.'.join(rel.parts))
        for name, value in vars(module).items():
            if isinstance(value, Path) and not name.startswith('_'):
                assert value.resolve().is_relative_to(repo) or not value.is_absolute(), \
                    f'{rel}.{name} = {value} lies outside the repository'
        source = conftest.read_text()
        for parent_of_repo in ('REPO.parent', 'parents[2]', "'..'"):
            assert parent_of_repo not in source, f'{rel} builds a path above the repository'
