"""How mmmila's ops are registered (mmmila/ops/registration.py): every op, PyTorch or Triton, takes
its autograd from the one lean kernel; backward ops refuse a second derivative with a clear error;
lists of tensors, retained graphs and the op's own ``needs_input_grad`` work through it."""
from __future__ import annotations

import pytest
import torch

import mmmila.kernels  # noqa: F401  (registers the Triton ops: the interpreter runs them on CPU)
from mmmila.ops.linear_chains import norm_linears_ref
from mmmila.ops.registration import implementation

SEED = 0


def _mmmila_ops() -> list[str]:
    return sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith('mmmila::'))


def _active_autograd_line(name: str) -> str:
    lines = [ln for ln in torch._C._dispatch_dump(name).splitlines() if ln.startswith('Autograd[alias]:')]
    assert len(lines) == 1, f'{name}: {lines}'
    return lines[0]


def test_every_op_has_the_lean_autograd_kernel():
    names = _mmmila_ops()
    forward = [n for n in names if not n.endswith('_backward')]
    # the five PyTorch ops, four with a Triton twin, each with its backward op
    assert {'mmmila::dwconv_tokens', 'mmmila::norm_linears', 'mmmila::gelu_linear',
            'mmmila::linear_attention', 'mmmila::expand_dwconv'} <= set(forward)
    assert len(forward) == 9 and len(names) == 18, names
    for name in names:
        line = _active_autograd_line(name)
        assert 'mmmila/ops/registration.py' in line, f'{name}: {line}'
        assert 'fallthrough' not in line, f'{name}: {line}'


def test_implementation_is_the_python_function():
    for name in _mmmila_ops():
        op = getattr(torch.ops.mmmila, name.split('::')[1]).default
        assert callable(implementation(op)), name
    assert implementation(torch.ops.aten.mm.default) is None


def _dwconv_inputs(dtype=torch.float64):
    g = torch.Generator().manual_seed(SEED)
    H, W, C = 3, 5, 4
    x = torch.randn(2, H * W, C, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(C, 1, 3, 3, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(C, generator=g, dtype=dtype, requires_grad=True)
    return x, w, b, (H, W)


def test_a_second_derivative_raises_a_clear_error():
    x, w, b, (H, W) = _dwconv_inputs()
    y = torch.ops.mmmila.dwconv_tokens(x, w, b, H, W, None, None, True, 'silu')
    dx, = torch.autograd.grad(y.square().sum(), x, create_graph=True)   # the first derivative runs
    with pytest.raises(RuntimeError, match='dwconv_tokens_backward.*not differentiable'):
        dx.sum().backward()


def test_a_retained_graph_gives_the_same_gradients_twice():
    x, w, b, (H, W) = _dwconv_inputs()
    y = torch.ops.mmmila.dwconv_tokens(x, w, b, H, W, None, None, True, 'silu')
    first = torch.autograd.grad(y.square().sum(), (x, w, b), retain_graph=True)
    second = torch.autograd.grad(y.square().sum(), (x, w, b))
    for a, c in zip(first, second):
        assert torch.equal(a, c)


def test_only_the_inputs_asked_for_get_gradients():
    """needs_input_grad is read by the op's own arguments: a bias alone gets its gradient."""
    x, w, b, (H, W) = _dwconv_inputs()
    x.requires_grad_(False)
    w.requires_grad_(False)
    y = torch.ops.mmmila.dwconv_tokens(x, w, b, H, W, None, None, True, 'none')
    y.sum().backward()
    assert x.grad is None and w.grad is None
    torch.testing.assert_close(b.grad, torch.full_like(b, x.shape[0] * x.shape[1]))


def test_lists_of_tensors_in_and_out():
    """norm_linears takes lists of weights and biases and returns a list: each tensor of them gets
    its own gradient, the same as autograd's through the plain ops."""
    g = torch.Generator().manual_seed(SEED)
    C = 6
    x = torch.randn(2, 7, C, generator=g, dtype=torch.float64, requires_grad=True)
    norm = torch.nn.LayerNorm(C).double()
    lins = [torch.nn.Linear(C, n).double() for n in (5, 3)]
    with torch.no_grad():
        for p in [*norm.parameters(), *(p for lin in lins for p in lin.parameters())]:
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    params = [x, *norm.parameters(), *(p for lin in lins for p in lin.parameters())]
    outs = torch.ops.mmmila.norm_linears(x, norm.weight, norm.bias, norm.eps, [lin.weight for lin in lins],
                                         [lin.bias for lin in lins])
    assert isinstance(outs, list) and len(outs) == 2
    weights = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in outs]
    got = torch.autograd.grad(sum((o * k).sum() for o, k in zip(outs, weights)), params)
    ref = torch.autograd.grad(sum((o * k).sum() for o, k in zip(norm_linears_ref(x, norm, lins), weights)),
                              params)
    for a, c in zip(got, ref):
        torch.testing.assert_close(a, c)
