"""The LayerNorm and GELU chains (``torch.ops.mmmila.norm_linears`` / ``gelu_linear``): maths,
gradients, opcheck, what they keep for backward, and autocast without extra casts."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmmila.bench.launches import count_launches
from mmmila.ops import chunks, gelu_linear, norm_linears
from tests.conftest import seed_for


def _modules(C=6, outs=(4, 3), dtype=torch.float64, seed=0):
    torch.manual_seed(seed_for(seed))
    norm = nn.LayerNorm(C).to(dtype)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    return norm, [nn.Linear(C, o).to(dtype) for o in outs]


def test_norm_linears_gradcheck():
    norm, lins = _modules()
    x = torch.randn(2, 5, 6, dtype=torch.float64, requires_grad=True)
    params = [norm.weight, norm.bias] + [p for lin in lins for p in (lin.weight, lin.bias)]

    def f(x, *_):
        return norm_linears(x, norm, lins)

    assert torch.autograd.gradcheck(f, (x, *params))


def test_gelu_linear_gradcheck():
    _, (lin, _) = _modules()
    h = torch.randn(2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda h, w, b: gelu_linear(h, lin), (h, lin.weight, lin.bias))


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 7 rows of a 6-wide hidden layer: the 2 x 17 rows below make 5 of them, the last ragged."""
    monkeypatch.setattr(chunks, 'CHUNK_ELEMENTS', 7 * 6 / torch.get_num_threads())


def test_gelu_linear_gradcheck_across_chunks(small_chunks):
    _, (lin, _) = _modules()
    h = torch.randn(2, 17, 6, dtype=torch.float64, requires_grad=True,
                    generator=torch.Generator().manual_seed(seed_for(3)))
    assert torch.autograd.gradcheck(lambda h, w, b: gelu_linear(h, lin), (h, lin.weight, lin.bias))


def test_gelu_linear_chunks_match_float64(small_chunks):
    """float32 by chunks against the plain ops in float64: no further from them than the plain ops in
    float32 on the same draw (up to 4x: the weight gradient sums its chunks in another order)."""
    _, (lin, _) = _modules(dtype=torch.float32)
    g = torch.Generator().manual_seed(seed_for(4))
    h = torch.randn(2, 17, 6, generator=g)
    grad = torch.randn(2, 17, 4, generator=g)

    def run(fn, dtype):
        leaves = [t.detach().to(dtype).requires_grad_() for t in (h, lin.weight, lin.bias)]
        out = fn(*leaves)
        out.backward(grad.to(dtype))
        return [out.detach()] + [t.grad for t in leaves]

    got = run(lambda h, w, b: torch.ops.mmmila.gelu_linear(h, w, b), torch.float32)
    ref32 = run(lambda h, w, b: F.linear(F.gelu(h), w, b), torch.float32)
    exact = run(lambda h, w, b: F.linear(F.gelu(h), w, b), torch.float64)

    def rel(a, b):
        return ((a.double() - b).norm() / b.norm()).item()

    for name, a, r, e in zip(('out', 'dh', 'dweight', 'dbias'), got, ref32, exact):
        assert a.dtype == torch.float32 and a.shape == e.shape, name
        assert rel(a, e) <= 4 * rel(r, e) + 1e-7, name


def test_opcheck():
    norm, lins = _modules(dtype=torch.float32)
    x = torch.randn(2, 5, 6, requires_grad=True)
    torch.library.opcheck(torch.ops.mmmila.norm_linears.default,
                          (x, norm.weight, norm.bias, 1e-5, [l.weight for l in lins], [l.bias for l in lins]))
    torch.library.opcheck(torch.ops.mmmila.gelu_linear.default, (x, lins[0].weight, lins[0].bias))


def test_keep_the_input_only():
    """Autograd keeps x (norm_linears) and h (gelu_linear), not the norm's or GELU's output: the tensors
    saved for backward hold exactly the inputs and parameters."""
    norm, lins = _modules(dtype=torch.float32)
    x = torch.randn(2, 5, 6, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        outs = norm_linears(x, norm, lins)
        out = gelu_linear(outs[0], nn.Linear(4, 2))
    big = [t for t in saved if t.dim() >= 2 and t.shape[:-1] == (2, 5)]
    assert len(big) == 2 and big[0] is x and big[1] is outs[0]


def test_autocast_runs_in_bf16_and_casts_only_weights():
    """Under bf16 autocast the chain takes bf16 activations with no cast of x or of the norm's output:
    its casts are the linear layers' weights and biases in forward and the weights' gradients in
    backward (the biases' gradients are summed straight into float32); results match plain ops in
    bf16."""
    norm, lins = _modules(C=16, outs=(16, 16), dtype=torch.float32, seed=1)
    x = torch.randn(2, 7, 16).bfloat16().requires_grad_()

    def step():
        with torch.autocast('cpu', dtype=torch.bfloat16):
            outs = norm_linears(x, norm, lins)
        sum(o.sum() for o in outs).backward()
        return outs

    outs = step()
    assert all(o.dtype == torch.bfloat16 for o in outs)
    assert all(p.grad.dtype == torch.float32 for p in [norm.weight, *lins[0].parameters()])
    launches = count_launches(step)
    assert launches.casts == 3 * len(lins)   # W and b of each linear forward, W's gradient backward
    with torch.autocast('cpu', dtype=torch.bfloat16):
        plain = [lin(norm(x)) for lin in lins]
    exact = [F.linear(F.layer_norm(x.double(), (16,), norm.weight.double(), norm.bias.double()),
                      lin.weight.double(), lin.bias.double()) for lin in lins]
    for o, p, e in zip(outs, plain, exact):
        assert (o.double() - e).norm() <= 2 * (p.double() - e).norm()


@pytest.mark.parametrize('bad', ['features', 'no bias'])
def test_bad_linear_is_named(bad):
    norm, lins = _modules()
    lin = nn.Linear(5, 3) if bad == 'features' else nn.Linear(6, 3, bias=False)
    with pytest.raises(ValueError, match='linear layer 1 must take 6 input features'):
        norm_linears(torch.zeros(1, 2, 6, dtype=torch.float64), norm, [lins[0], lin.double()])
