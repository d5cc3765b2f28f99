"""The Downsample's expansion op ``torch.ops.mmmila.expand_dwconv``: its maths against float64 across
chunk boundaries (one row per chunk, ragged chunks, the chunk rule itself), gradcheck, opcheck, what
it keeps for backward, autocast, empty inputs and its checks."""
from __future__ import annotations

import pytest
import torch

from mmmila.ops import chunks, expand_dwconv
from mmmila.ops import downsample as module
from mmmila.ops.downsample import expand_dwconv_ref
from tests.conftest import seed_for

NAMES = ('x', 'expand_weight', 'expand_bias', 'dw_weight', 'dw_bias')


def _inputs(B, hw, C, hidden, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed_for(seed))
    shapes = ((B, hw[0] * hw[1], C), (hidden, C), (hidden,), (hidden, 1, 3, 3), (hidden,))
    scales = (1.0, C ** -0.5, 0.5, 0.3, 0.5)
    return [torch.randn(s, generator=g).mul_(k).to(dtype) for s, k in zip(shapes, scales)]


def _run(fn, inputs, hw, grad):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves, hw)
    out.backward(grad)
    return [out.detach()] + [t.grad for t in leaves]


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


@pytest.fixture(params=[1, 2, 3], ids=['1-row chunks', '2-row chunks', '3-row chunks'])
def chunk_rows(request, monkeypatch):
    """Chunks of 1, 2 or 3 output rows: every test crosses chunk boundaries (3: a ragged last one)."""
    monkeypatch.setattr(module, '_chunk_rows', lambda b, w, c, rows, dev: min(request.param, rows))
    return request.param


@pytest.fixture(params=['compiled', 'pytorch'])
def row_kernels(request, monkeypatch):
    """How a chunk is computed on CPU: mmmila's compiled kernels (the op's CPU implementation for
    float32 and float64), or the PyTorch ops that every other device runs."""
    if request.param == 'pytorch':
        monkeypatch.setattr(module, 'COMPILED_ROWS', module.PYTORCH_ROWS)
    return request.param


@pytest.mark.parametrize('B,hw,C,hidden', [(1, (8, 6), 4, 16), (2, (10, 4), 3, 8), (1, (2, 2), 2, 4),
                                           (1, (4, 6), 3, 21)])
def test_matches_float64_across_chunks(B, hw, C, hidden, chunk_rows, row_kernels):
    """Output and every gradient in float32 against the plain ops in float64 on the whole map: no
    further from it than the plain ops run in float32 on the same draw (up to 4x: float32 sums run
    in other orders), with the rows split into chunks."""
    inputs = _inputs(B, hw, C, hidden, seed=1)
    grad = torch.randn(B, hw[0] * hw[1] // 4, hidden, generator=torch.Generator().manual_seed(seed_for(2)))
    ref64 = _run(expand_dwconv_ref, [t.double() for t in inputs], hw, grad.double())
    ref32 = _run(expand_dwconv_ref, inputs, hw, grad)
    got = _run(expand_dwconv, inputs, hw, grad)
    assert all(g.stride() == t.stride() for g, t in zip(got[1:], inputs)), 'gradients in the inputs\' strides'
    for name, ours, theirs, exact in zip(('out',) + NAMES, got, ref32, ref64):
        assert ours.dtype == theirs.dtype and ours.shape == exact.shape, name
        assert _rel(ours, exact) <= 4 * _rel(theirs, exact) + 1e-7, name


def test_the_chunk_rule_splits_a_map(monkeypatch, row_kernels):
    """The rule itself (not a patched one) cuts a 14-row output into ragged chunks; the result is
    the whole map's."""
    B, hw, C, hidden = 1, (28, 6), 4, 16
    monkeypatch.setattr(chunks, 'CHUNK_ELEMENTS', 2 * 6 * 16 * 4 // torch.get_num_threads())
    rows = module._chunk_rows(B, hw[1], hidden, hw[0] // 2, torch.device('cpu'))
    assert 1 < rows < hw[0] // 2 and (hw[0] // 2) % rows
    inputs = _inputs(B, hw, C, hidden, dtype=torch.float64, seed=3)
    grad = torch.randn(B, hw[0] * hw[1] // 4, hidden, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(seed_for(4)))
    got, ref = _run(expand_dwconv, inputs, hw, grad), _run(expand_dwconv_ref, inputs, hw, grad)
    for name, a, b in zip(('out',) + NAMES, got, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)


def test_gradcheck(chunk_rows, row_kernels):
    leaves = [t.requires_grad_() for t in _inputs(2, (6, 4), 3, 4, dtype=torch.float64, seed=5)]
    assert torch.autograd.gradcheck(lambda *t: expand_dwconv(*t, (6, 4)), leaves)


def test_opcheck():
    leaves = [t.requires_grad_() for t in _inputs(2, (6, 4), 3, 8, seed=6)]
    torch.library.opcheck(torch.ops.mmmila.expand_dwconv.default, (*leaves, 6, 4))


def test_keeps_the_input_only():
    """Autograd keeps x and the parameters, never the expanded map (8C channels at full resolution)."""
    inputs = [t.requires_grad_() for t in _inputs(1, (8, 8), 4, 32, seed=7)]
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        expand_dwconv(*inputs, (8, 8))
    assert len(saved) == 5 and all(s is t for s, t in zip(saved, inputs))


def test_autocast_runs_in_bf16():
    """Under bf16 autocast the op runs in bf16 (as F.linear and F.conv2d would); the parameters'
    gradients come back in float32, no further from the float64 result than the plain ops' under the
    same autocast on the same draw (up to 2x: bf16 products may round differently)."""
    inputs = _inputs(1, (8, 6), 4, 16, seed=8)
    grad = torch.randn(1, 12, 16, generator=torch.Generator().manual_seed(seed_for(9)))

    def run(fn):
        leaves = [t.detach().clone().requires_grad_() for t in inputs]
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = fn(*leaves, (8, 6))
        out.float().backward(grad)
        return [out.detach()] + [t.grad for t in leaves]

    got, ref = run(expand_dwconv), run(expand_dwconv_ref)
    exact = _run(expand_dwconv_ref, [t.double() for t in inputs], (8, 6), grad.double())
    assert got[0].dtype == torch.bfloat16
    for name, ours, theirs, truth in zip(('out',) + NAMES, got, ref, exact):
        assert ours.dtype == theirs.dtype, name
        assert name == 'out' or ours.dtype == torch.float32, name
        assert _rel(ours, truth) <= 2 * _rel(theirs, truth) + 1e-6, name


def test_empty_batch():
    inputs = [t.requires_grad_() for t in _inputs(0, (4, 4), 3, 8)]
    out = expand_dwconv(*inputs, (4, 4))
    assert out.shape == (0, 4, 8)
    out.sum().backward()
    assert all(t.grad is not None and not t.grad.any() for t in inputs)


@pytest.mark.parametrize('change,message', [
    (lambda a: a.update(hw=(5, 4), x=torch.zeros(1, 20, 3)), 'even sides'),
    (lambda a: a.update(hw=(4, 5)), 'does not match'),
    (lambda a: a.update(expand_weight=torch.zeros(8, 5)), 'expand_weight must be'),
    (lambda a: a.update(dw_weight=torch.zeros(8, 1, 5, 5)), 'dw_weight must be'),
    (lambda a: a.update(dw_bias=torch.zeros(7)), 'dw_bias must be'),
    (lambda a: a.update(x=torch.zeros(16, 3)), 'tokens'),
])
def test_bad_inputs_are_named(change, message):
    args = dict(zip(NAMES, _inputs(1, (4, 4), 3, 8)), hw=(4, 4))
    change(args)
    with pytest.raises(ValueError, match=message):
        expand_dwconv(args['x'], args['expand_weight'], args['expand_bias'], args['dw_weight'],
                      args['dw_bias'], args['hw'])
