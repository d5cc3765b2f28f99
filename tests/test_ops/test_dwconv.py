"""The depthwise-conv chain op ``torch.ops.mmmila.dwconv_tokens`` (PyTorch implementation): its maths
against float64, gradients, opcheck, autocast, odd and empty inputs, and its checks."""
from __future__ import annotations

import pytest
import torch

from mmmila.ops import dwconv_tokens
from mmmila.ops.dwconv import dwconv_tokens_ref
from tests.conftest import seed_for

# the four uses in a MILA block, and all options at once
USES = {
    'cpe': dict(skip=True),
    'dwc': dict(act='silu'),
    'lepe+gate': dict(residual=True, gate=True),
    'all': dict(act='silu', skip=True, residual=True, gate=True),
}


def _inputs(B, hw, C, use, dtype=torch.float32, seed=0, param_dtype=None):
    g = torch.Generator().manual_seed(seed_for(seed))
    N = hw[0] * hw[1]

    def rand(*shape, dt=dtype):
        return torch.randn(*shape, generator=g).to(dt)

    opts = USES[use]
    pdt = param_dtype or dtype
    args = dict(x=rand(B, N, C), weight=rand(C, 1, 3, 3, dt=pdt) * 0.3, bias=rand(C, dt=pdt) * 0.1,
                residual=rand(B, N, C) if opts.get('residual') else None,
                gate=rand(B, N, C) if opts.get('gate') else None)
    return args, dict(skip=opts.get('skip', False), act=opts.get('act', 'none'))


def _run(fn, args, flags, hw, grad):
    leaves = {k: (v.detach().clone().requires_grad_() if v is not None else None) for k, v in args.items()}
    out = fn(leaves['x'], leaves['weight'], leaves['bias'], hw, leaves['residual'], leaves['gate'], **flags)
    out.backward(grad)
    return out.detach(), {k: v.grad for k, v in leaves.items() if v is not None}


def _torch(x, weight, bias, hw, residual, gate, **flags):
    return dwconv_tokens(x, weight, bias, hw, residual, gate, backend='torch', **flags)


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize('use', list(USES))
@pytest.mark.parametrize('B,hw,C', [(2, (5, 7), 16), (1, (1, 1), 12), (1, (7, 1), 24), (1, (3, 5), 64)])
def test_matches_float64(use, B, hw, C):
    """Output and every gradient in float32 against the plain ops in float64: no further from it than
    the plain ops run in float32 on the same draw (up to 4x, float32 summation orders differ)."""
    args, flags = _inputs(B, hw, C, use, seed=1)
    grad = torch.randn(B, hw[0] * hw[1], C, generator=torch.Generator().manual_seed(seed_for(2)))
    ref64 = _run(dwconv_tokens_ref, {k: None if v is None else v.double() for k, v in args.items()},
                 flags, hw, grad.double())
    ref32 = _run(dwconv_tokens_ref, args, flags, hw, grad)
    got = _run(_torch, args, flags, hw, grad)
    assert set(got[1]) == set(ref64[1])
    for name, ours, theirs, exact in [('out', got[0], ref32[0], ref64[0])] + [
            (k, got[1][k], ref32[1][k], ref64[1][k]) for k in ref64[1]]:
        assert ours.dtype == theirs.dtype and ours.shape == exact.shape, name
        assert _rel(ours, exact) <= 4 * _rel(theirs, exact) + 1e-7, name


@pytest.mark.parametrize('use', ['cpe', 'dwc', 'lepe+gate'])
def test_gradcheck(use):
    args, flags = _inputs(1, (3, 4), 4, use, dtype=torch.float64, seed=3)
    leaves = [v.requires_grad_() for v in args.values() if v is not None]
    keys = [k for k, v in args.items() if v is not None]

    def fn(*tensors):
        kw = dict(zip(keys, tensors))
        return dwconv_tokens(kw['x'], kw['weight'], kw['bias'], (3, 4), kw.get('residual'), kw.get('gate'),
                             backend='torch', **flags)

    assert torch.autograd.gradcheck(fn, leaves)


@pytest.mark.parametrize('use', ['cpe', 'dwc', 'lepe+gate'])
def test_opcheck(use):
    args, flags = _inputs(2, (3, 5), 8, use, seed=4)
    for v in args.values():
        if v is not None:
            v.requires_grad_()
    torch.library.opcheck(torch.ops.mmmila.dwconv_tokens.default,
                          (args['x'], args['weight'], args['bias'], 3, 5, args['residual'], args['gate'],
                           flags['skip'], flags['act']))


def test_autocast_keeps_weights_and_casts_activations():
    """Under bf16 autocast: float32 activations run in bf16, the float32 weight and bias are read as
    they are (their gradients come back float32), and the result matches the plain ops in bf16."""
    args, flags = _inputs(1, (4, 6), 16, 'all', seed=5)
    leaves = {k: v.clone().requires_grad_() for k, v in args.items()}
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = dwconv_tokens(leaves['x'], leaves['weight'], leaves['bias'], (4, 6), leaves['residual'],
                            leaves['gate'], backend='torch', **flags)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert leaves['weight'].grad.dtype == torch.float32 and leaves['bias'].grad.dtype == torch.float32
    bf = {k: v.bfloat16() if k not in ('weight', 'bias') else v for k, v in args.items()}
    ref16 = dwconv_tokens_ref(bf['x'], bf['weight'], bf['bias'], (4, 6), bf['residual'], bf['gate'], **flags)
    ref64 = dwconv_tokens_ref(*(args[k].double() for k in ('x', 'weight', 'bias')), (4, 6),
                              args['residual'].double(), args['gate'].double(), **flags)
    assert _rel(out, ref64) <= 2 * _rel(ref16, ref64)


def test_empty_batch():
    args, flags = _inputs(0, (3, 3), 8, 'all', seed=6)
    out, grads = _run(_torch, args, flags, (3, 3), torch.zeros(0, 9, 8))
    assert out.shape == (0, 9, 8)
    assert grads['weight'].abs().sum() == 0 and grads['x'].shape == (0, 9, 8)


@pytest.mark.parametrize('change,message', [
    (dict(weight=torch.zeros(8, 1, 5, 5)), 'weight must be a depthwise 3x3 conv weight'),
    (dict(bias=torch.zeros(7)), 'bias must be (C,) = (8,), got (7,)'),
    (dict(residual=torch.zeros(1, 9, 8, dtype=torch.float64)), 'residual must have the shape and dtype of x'),
    (dict(hw=(2, 4)), 'map size hw=(2, 4) does not match N=9 tokens'),
    (dict(act='relu'), "act must be one of ('none', 'silu'), got 'relu'"),
])
def test_bad_inputs_are_named(change, message):
    kw = dict(x=torch.zeros(1, 9, 8), weight=torch.zeros(8, 1, 3, 3), bias=torch.zeros(8), hw=(3, 3),
              residual=None, act='none') | change
    with pytest.raises(ValueError) as err:
        dwconv_tokens(**kw)
    assert message in str(err.value)
