"""The package's structure (docs/architecture.md): no import cycle, dependencies pointing down the
layers, and ``import mmmila`` with torch and mmengine alone."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from .conftest import REPO

# Where each module of the installed package lives (kernels/ is installed as mmmila.kernels).
SOURCE_ROOTS = {'mmmila': REPO / 'mmmila', 'mmmila.kernels': REPO / 'kernels'}
# Compiled modules (setup.py's ext_modules): leaves of the graph, they import no mmmila module.
COMPILED = ('mmmila._C',)


def module_files(roots: dict[str, Path]) -> dict[str, Path]:
    """{dotted module name: file} of every .py file under the roots (``pkg/__init__.py`` is ``pkg``)."""
    modules = {}
    for prefix, root in roots.items():
        for path in sorted(root.rglob('*.py')):
            parts = list(path.relative_to(root).with_suffix('').parts)
            if parts[-1] == '__init__':
                parts.pop()
            modules['.'.join([prefix, *parts])] = path
    return modules


def _import_module_literal(node: ast.AST) -> str | None:
    """The module of ``importlib.import_module('...')`` / ``import_module('...')`` with a literal name."""
    if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)):
        return None
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, 'id', None)
    return node.args[0].value if name == 'import_module' else None


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of ``modules`` that ``name`` imports anywhere in its file (module level, inside
    functions, relative or absolute, and ``import_module`` of a literal name).

    ``from pkg import x`` is an import of ``pkg.x`` when that is a module, else of ``pkg``.
    Importing a submodule also runs its parents' ``__init__``; that implicit step is not an edge
    (it is how every package works), so a package's ``__init__`` may gather its submodules.
    """
    is_package = path.name == '__init__.py'
    package = name if is_package else name.rpartition('.')[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')
                base = base[:len(base) - (node.level - 1)]
                module = '.'.join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            targets = [f'{module}.{alias.name}' if f'{module}.{alias.name}' in modules else module
                       for alias in node.names]
        elif (literal := _import_module_literal(node)) is not None:
            targets = [literal]
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a non-module name: its module
                target = target.rpartition('.')[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(roots: dict[str, Path] = SOURCE_ROOTS,
                 compiled: tuple[str, ...] = ()) -> dict[str, set[str]]:
    """{module: the modules it imports}; ``compiled`` names compiled modules, leaves of the graph."""
    modules = module_files(roots)
    known = modules | dict.fromkeys(compiled)
    return {name: imports_of(name, path, known) for name, path in modules.items()} \
        | {name: set() for name in compiled}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles_and_names_them(tmp_path):
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': set()}) is None
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    # a function-level import, a relative one and an import_module literal close the cycle too
    pkg = tmp_path / 'pkg'
    (pkg / 'sub').mkdir(parents=True)
    (pkg / '__init__.py').write_text('')
    (pkg / 'sub' / '__init__.py').write_text('from .b import x\n')
    (pkg / 'a.py').write_text('def f():\n    from pkg.sub import b\n')
    (pkg / 'sub' / 'b.py').write_text('import importlib\nx = 1\ndef g():\n    importlib.import_module("pkg.c")\n')
    (pkg / 'c.py').write_text('from . import a\n')
    graph = import_graph({'pkg': pkg})
    assert graph['pkg.a'] == {'pkg.sub.b'} and graph['pkg.sub'] == {'pkg.sub.b'}
    assert graph['pkg.sub.b'] == {'pkg.c'} and graph['pkg.c'] == {'pkg.a'}
    assert find_cycle(graph) == ['pkg.a', 'pkg.sub.b', 'pkg.c', 'pkg.a']


def test_no_import_cycle_in_the_package():
    graph = import_graph(compiled=COMPILED)
    # the graph is the real one: these edges exist
    assert 'mmmila.checkpoint.loading' in graph['mmmila.models.backbones.mila']
    assert 'mmmila.models.backbones.mila' in graph['mmmila.registry']  # a function-level import
    assert 'mmmila.kernels' in graph['mmmila.ops.dispatch']            # an import_module literal
    assert 'mmmila._C' in graph['mmmila.ops.cpu_kernels']              # the compiled CPU kernels
    cycle = find_cycle(graph)
    assert cycle is None, 'import cycle: ' + ' -> '.join(cycle)


# Bottom-up (docs/architecture.md): a module may import only modules of its own layer or below.
LAYERS = [
    ('mmmila.version', 'mmmila._C', 'mmmila.ops', 'mmmila.kernels', 'mmmila.checkpoint.keys'),
    ('mmmila.checkpoint.reading',),
    ('mmmila.checkpoint.loading', 'mmmila.checkpoint'),
    ('mmmila.models',),
    ('mmmila.datasets', 'mmmila.engine'),
    ('mmmila.registry',),
    ('mmmila.distill',),
    ('mmmila.integration',),
    ('mmmila',),
    ('mmmila.utils', 'mmmila.bench', 'mmmila.deploy'),
]


def layer_of(module: str) -> int:
    best, depth = None, -1
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + '.')) and prefix.count('.') > depth:
                best, depth = i, prefix.count('.')
    assert best is not None, f'{module} is in no layer of docs/architecture.md'
    return best


def test_dependencies_point_down_the_layers():
    graph = import_graph(compiled=COMPILED)
    upward = [f'{a} -> {b}' for a, targets in sorted(graph.items()) for b in sorted(targets)
              if layer_of(b) > layer_of(a)]
    assert not upward, 'imports up the layers: ' + '; '.join(upward)


def test_mmmila_needs_only_torch_and_mmengine():
    """``import mmmila``, ``import mmmila.ops`` and a MILA forward with mmcv, mmdet, mmseg and
    mmpretrain unimportable (a fresh interpreter where importing them fails)."""
    code = '''
import sys
BLOCKED = ('mmcv', 'mmdet', 'mmseg', 'mmpretrain')
for name in BLOCKED:
    sys.modules[name] = None  # `import name` now raises ImportError
import torch
import mmmila, mmmila.ops
from mmmila.models import MILA
model = MILA(arch=dict(embed_dims=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8)), out_indices=(0, 3))
outs = model.eval()(torch.rand(1, 3, 64, 64))
loaded = sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED and sys.modules[m] is not None)
print([tuple(o.shape) for o in outs], loaded)
'''
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split('\n')[0] == '[(1, 32, 16, 16), (1, 256, 2, 2)] []'
