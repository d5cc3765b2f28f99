"""tools/get_flops.py (run as a subprocess) and its counting (``mmmila.bench.flops``): the paper's
FLOPs at 224, and the attention counted through any autograd Function."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from mmmila.bench import flops as get_flops

from ..conftest import REPO, TINY_ARCH

TOOL = REPO / 'tools' / 'get_flops.py'


def run_tool(*args):
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, cwd=REPO,
                          timeout=600)

# fvcore on the authors' model (docs/model.md, variants table): classifier FLOPs at 224 and parameters.
PAPER = {'t': (4.149e9, 24.392e6), 's': (7.278e9, 43.015e6), 'b': (16.157e9, 95.984e6)}
HEAD = {'t': 512 * 1000, 's': 512 * 1000, 'b': 768 * 1000}  # the linear head's multiply-adds


@pytest.mark.parametrize('variant', ['t', pytest.param('s', marks=pytest.mark.slow),
                                     pytest.param('b', marks=pytest.mark.slow)])
def test_classifier_flops_at_224_are_the_papers(variant):
    res = run_tool(str(REPO / 'configs' / f'mila_{variant}_in1k.py'), '--shape', '224')
    assert res.returncode == 0, res.stderr
    out = res.stdout
    rows = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.startswith(('whole', 'backbone'))}
    params, flops = float(rows['whole'][2]) * 1e6, float(rows['whole'][4]) * 1e9
    backbone_flops = float(rows['backbone'][4]) * 1e9
    paper_flops, paper_params = PAPER[variant]
    assert flops == pytest.approx(paper_flops, rel=0.01)
    assert backbone_flops == pytest.approx(paper_flops - HEAD[variant], rel=0.01)
    assert params == pytest.approx(paper_params, rel=0.001)


def test_attention_flops_formula():
    # one call: B N C (2d + 1) multiply-adds; MILA-T stage 0 at 224: N = 56 * 56, C = 64, d = 32
    assert get_flops.attention_flops(1, 3136, 64, 2) == 3136 * 64 * 65
    with pytest.raises(ValueError, match='not divisible'):
        get_flops.attention_flops(1, 10, 64, 3)


def test_every_autograd_function_of_mmmila_ops_is_discovered():
    found = get_flops.discover_autograd_functions()
    assert found and all(issubclass(f, torch.autograd.Function) for f in found)
    assert all(f.__module__.startswith(get_flops.ATTENTION_PACKAGES) for f in found)
    import mmmila.ops as ops
    import pkgutil
    import importlib
    expected = set()
    for info in pkgutil.walk_packages(ops.__path__, 'mmmila.ops.'):
        module = importlib.import_module(info.name)
        expected |= {v for v in vars(module).values()
                     if isinstance(v, type) and issubclass(v, torch.autograd.Function)
                     and v.__module__ == info.name}
    assert expected <= set(found)


def _tiny_backbone():
    from mmmila.models import MILA
    return MILA(arch=TINY_ARCH, out_indices=(0, 1, 2, 3), drop_path_rate=0.0).eval()


def _expected_attention(size):
    """Sum over blocks of B N C (2d + 1) for TINY_ARCH at size x size (maps 16, 8, 4, 2 at 64)."""
    total = 0
    for i, (depth, heads) in enumerate(zip(TINY_ARCH['depths'], TINY_ARCH['num_heads'])):
        side = -(-size // 2**(i + 2))
        c = TINY_ARCH['embed_dims'] * 2**i
        total += depth * side * side * c * (2 * (c // heads) + 1)
    return total


@pytest.mark.parametrize('fn_name', [f.__name__ for f in get_flops.discover_autograd_functions()
                                     if 'num_heads' in __import__('inspect').signature(f.forward).parameters])
def test_attention_function_is_counted_like_the_reference(monkeypatch, fn_name):
    """The model counted through a discovered Function equals the model counted through the
    reference's einsums, and the Function's share is exactly the paper's count."""
    import mmmila.models.layers.attention as attention
    fn = next(f for f in get_flops.discover_autograd_functions() if f.__name__ == fn_name)
    from mmmila.ops.reference import mila_linear_attention_ref

    monkeypatch.setattr(attention, 'mila_linear_attention',
                        lambda qk, v, hw, nh, backend='auto': mila_linear_attention_ref(qk, v, hw, nh))
    reference = get_flops.count(_tiny_backbone(), 64, 64)

    if fn.__module__.startswith('mmmila.ops'):
        apply = fn.apply  # the CPU path runs as it is
    else:
        # a GPU kernel's Function cannot run here: a stand-in of the same name (the trace records
        # one node per Function whatever its body) routes the shapes through the same handle
        class Probe(torch.autograd.Function):
            @staticmethod
            def forward(ctx, qk, v, hw, num_heads):
                return mila_linear_attention_ref(qk, v, hw, num_heads)

        Probe.__name__ = Probe.__qualname__ = fn.__name__
        apply = Probe.apply
    monkeypatch.setattr(attention, 'mila_linear_attention',
                        lambda qk, v, hw, nh, backend='auto': apply(qk, v, (int(hw[0]), int(hw[1])), int(nh)))
    through_fn = get_flops.count(_tiny_backbone(), 64, 64)
    assert through_fn['attention_ops'] == [f'prim::PythonOp.{fn_name}']
    assert through_fn['flops'] == pytest.approx(reference['flops'], rel=1e-4)
    assert through_fn['attention_flops'] == _expected_attention(64)
    assert reference['attention_ops'] == [] and reference['attention_flops'] == 0


class _Opaque(torch.autograd.Function):
    """A Function get_flops knows nothing about."""

    @staticmethod
    def forward(ctx, x):
        return x * 2


class _UsesOpaque(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return _Opaque.apply(self.conv(x))


def test_an_mmmila_function_without_a_handle_is_an_error_not_a_zero(monkeypatch):
    # a Function of another library is left out of the count, as fvcore does ...
    result = get_flops.count(_UsesOpaque(), 32, 32)
    assert result['flops'] == 32 * 32 * 3 * 4 and 'prim::PythonOp._Opaque' in result['unsupported']
    # ... but one of mmmila's own (not discovered as an attention op) is an error
    import types
    fake = types.ModuleType('mmmila.ops._fake_for_test')
    monkeypatch.setattr(_Opaque, '__module__', fake.__name__)
    fake._Opaque = _Opaque
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    with pytest.raises(RuntimeError, match=r'prim::PythonOp\._Opaque'):
        get_flops.count(_UsesOpaque(), 32, 32)


def test_handle_needs_the_number_of_heads():
    from mmengine.analysis import FlopAnalyzer

    class Tokens(nn.Module):
        def forward(self, x):
            return _Opaque.apply(x.flatten(2).transpose(1, 2))  # (B, N, C), no num_heads argument

    x = torch.rand(1, 64, 4, 4)
    analyzer = FlopAnalyzer(Tokens(), (x,)).unsupported_ops_warnings(False)
    analyzer.set_op_handle('prim::PythonOp._Opaque', get_flops.attention_flop_handle(_Opaque, {}))
    with pytest.raises(ValueError, match='cannot tell the number of heads.*C=64'):
        analyzer.total()
    analyzer = FlopAnalyzer(Tokens(), (x,)).unsupported_ops_warnings(False)
    analyzer.set_op_handle('prim::PythonOp._Opaque', get_flops.attention_flop_handle(_Opaque, {64: 32}))
    assert analyzer.total() == 16 * 64 * 65  # heads from the model's layer widths: d = 32


def test_cli_rejects_a_bad_shape():
    res = run_tool('configs/mila_t_in1k.py', '--shape', '1', '2', '3')
    assert res.returncode == 2 and '--shape takes H W' in res.stderr
