"""Tools are command lines over package code (docs/architecture.md): a tool never imports another
tool, no test loads a tool's functions, and nothing edits ``sys.path`` but the GPU kit's staging."""
from __future__ import annotations

import ast
from pathlib import Path

from ..conftest import REPO

TOOLS = sorted((REPO / 'tools').rglob('*.py'))
SOURCES = sorted(p for folder in ('mmmila', 'kernels', 'tools', 'tests')
                 for p in (REPO / folder).rglob('*.py'))
STAGING = REPO / 'mmmila' / 'bench' / 'gpu_kit' / 'staging.py'


def imported_names(path: Path) -> set[str]:
    """Every module name that ``path`` imports (module level or inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def edits_sys_path(path: Path) -> list[int]:
    """Lines of ``path`` that change ``sys.path``: a call of its methods, an assignment to it or to a
    slice of it, or an augmented assignment."""
    def is_sys_path(node):
        return (isinstance(node, ast.Attribute) and node.attr == 'path' and isinstance(node.value, ast.Name)
                and node.value.id == 'sys')
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and is_sys_path(node.func.value) and node.func.attr in ('insert', 'append', 'extend', 'remove', 'pop', 'clear')):
            lines.append(node.lineno)
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AugAssign) else []
        for target in targets:
            if is_sys_path(target) or (isinstance(target, ast.Subscript) and is_sys_path(target.value)):
                lines.append(node.lineno)
    return sorted(lines)


def test_a_tool_never_imports_another_tool():
    stems = {p.stem for p in TOOLS}
    found = [f'{p.relative_to(REPO)} imports {name}' for p in TOOLS for name in sorted(imported_names(p))
             if name.split('.')[0] in stems | {'tools'} or name == 'runpy']
    assert not found, '; '.join(found)


def loads_a_module_by_runpy(path: Path) -> bool:
    """Whether ``path`` calls ``runpy.run_path`` with a ``run_name`` other than '__main__': reads a
    script's functions instead of running it as a user does."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        name = getattr(node.func, 'attr', getattr(node.func, 'id', None)) if isinstance(node, ast.Call) else None
        if name == 'run_path':
            run_name = next((k.value for k in node.keywords if k.arg == 'run_name'), None)
            if not (isinstance(run_name, ast.Constant) and run_name.value == '__main__'):
                return True
    return False


def test_tests_use_package_code_not_a_tools_functions():
    tests = sorted((REPO / 'tests').rglob('*.py'))
    found = [str(p.relative_to(REPO)) for p in tests if loads_a_module_by_runpy(p)
             or any(name.split('.')[0] == 'tools' for name in imported_names(p))]
    assert not found, f'these tests load a tool\'s functions instead of the package\'s: {found}'


def test_only_the_gpu_kits_staging_edits_sys_path():
    assert edits_sys_path(STAGING), 'the staging no longer edits sys.path: update this test'
    found = [f'{p.relative_to(REPO)}:{line}' for p in SOURCES if p != STAGING for line in edits_sys_path(p)]
    assert not found, f'sys.path edited at {found}'


def test_the_edit_finder_finds_edits(tmp_path):
    path = tmp_path / 'a.py'
    path.write_text('import sys\nsys.path.insert(0, "x")\nsys.path[:0] = ["y"]\nsys.path += ["z"]\n'
                    'sys.path = []\nprint(sys.path)\nother.path.append(1)\n')
    assert edits_sys_path(path) == [2, 3, 4, 5]
