"""The Triton kernels of the depthwise-conv chain, ``torch.ops.mmmila.dwconv_tokens_triton`` (CPU: Triton
interpreter; else CUDA): output and all five gradients against the plain ops in float64, 16-bit inputs
also against the plain ops run in the same dtype; odd and empty maps, chunking, strides, the launch
count and opcheck.

Maps are small (the interpreter runs every program in Python) but never a multiple of the token
tiles; C = 12 and 24 leave channels of a block masked.
"""
from __future__ import annotations

import pytest
import torch

from mmmila.bench.errors import rel_rms
from mmmila.bench.launches import LaunchCounter
from mmmila.kernels import dwconv_launch_config
from mmmila.kernels.dwconv import dwconv_bwd
from mmmila.ops.dwconv import dwconv_tokens_ref

from ..conftest import seed_for
from ..test_ops.helpers import assert_flash_rule
from .helpers import DEVICE, OPCHECKS, assert_float32_rule, require_runnable_kernels, stored_as

# the four uses in a MILA block, and all options at once
USES = {
    'cpe': dict(skip=True),
    'dwc': dict(act='silu'),
    'lepe+gate': dict(residual=True, gate=True),
    'all': dict(act='silu', skip=True, residual=True, gate=True),
}
GRADS = ('x', 'weight', 'bias', 'residual', 'gate')


@pytest.fixture(autouse=True, scope='module')
def _kernels_runnable():
    require_runnable_kernels()


def _inputs(B, hw, C, use, dtype=torch.float32, param_dtype=None, seed=0):
    """Seeded inputs of one use as a dict (None where the use has no such input), its flags, and an
    upstream gradient."""
    gen = torch.Generator().manual_seed(seed_for(seed))
    N = hw[0] * hw[1]

    def rand(*shape, dt=dtype, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(DEVICE, dt)

    opts = USES[use]
    pdt = param_dtype or dtype
    args = dict(x=rand(B, N, C), weight=rand(C, 1, 3, 3, dt=pdt, scale=0.3), bias=rand(C, dt=pdt, scale=0.1),
                residual=rand(B, N, C) if opts.get('residual') else None,
                gate=rand(B, N, C) if opts.get('gate') else None)
    flags = dict(skip=opts.get('skip', False), act=opts.get('act', 'none'))
    return args, flags, rand(B, N, C)


def _triton(x, weight, bias, hw, residual=None, gate=None, skip=False, act='none'):
    out = torch.ops.mmmila.dwconv_tokens_triton(x, weight, bias, hw[0], hw[1], residual, gate, skip, act)
    if out.requires_grad:
        assert 'mmmila_dwconv_tokens_triton' in type(out.grad_fn).__name__   # the kernels' own autograd
    return out


def _run(fn, args, flags, hw, grad):
    """(out, {name: gradient}) of ``fn`` on fresh leaf copies of the given inputs."""
    leaves = {k: None if v is None else v.detach().clone().requires_grad_() for k, v in args.items()}
    out = fn(leaves['x'], leaves['weight'], leaves['bias'], hw, leaves['residual'], leaves['gate'], **flags)
    out.backward(grad)
    return {'out': out.detach()} | {k: v.grad for k, v in leaves.items() if v is not None}


def _float64(args, flags, hw, grad):
    return _run(dwconv_tokens_ref, {k: None if v is None else v.double() for k, v in args.items()},
                flags, hw, grad.double())


@pytest.mark.parametrize('use', list(USES))
@pytest.mark.parametrize('B,hw,C', [(2, (5, 7), 16), (1, (1, 1), 12), (1, (7, 1), 24), (1, (1, 9), 12),
                                    (2, (3, 5), 24), (1, (9, 10), 64)])
def test_float32(use, B, hw, C):
    """No further from float64 than the plain ops in float32 on the same draw (up to 4x: the orders
    of the float32 sums differ), plus a few float32 rounding steps where those are exact."""
    args, flags, grad = _inputs(B, hw, C, use, seed=1)
    got = _run(_triton, args, flags, hw, grad)
    ref32 = _run(dwconv_tokens_ref, args, flags, hw, grad)
    truth = _float64(args, flags, hw, grad)
    assert_float32_rule(got, ref32, truth)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('use', list(USES))
def test_half_precision(dtype, use):
    """FlashAttention's rule against the plain ops run in the same dtype (the weight too)."""
    hw = (5, 7)
    args, flags, grad = _inputs(2, hw, 24, use, dtype=dtype, seed=2)
    got = _run(_triton, args, flags, hw, grad)
    lowp = _run(dwconv_tokens_ref, args, flags, hw, grad)
    truth = _float64(args, flags, hw, grad)
    for name, exact in truth.items():
        assert got[name].dtype == dtype, name
        assert_flash_rule(name, got[name], lowp[name], exact, rtol=2e-2, stored=stored_as(exact, dtype))


@pytest.mark.parametrize('use', ['cpe', 'all'])
def test_float32_parameters_with_bfloat16_tokens(use):
    """Autocast's case: bf16 tokens, float32 weight and bias read as they are; their gradients come
    back in float32. Judged against the plain ops in bf16 (which cast the weight to bf16)."""
    hw = (4, 9)
    args, flags, grad = _inputs(2, hw, 12, use, dtype=torch.bfloat16, param_dtype=torch.float32, seed=3)
    got = _run(_triton, args, flags, hw, grad)
    lowp = _run(dwconv_tokens_ref, args, flags, hw, grad)
    truth = _float64(args, flags, hw, grad)
    assert got['weight'].dtype == torch.float32 and got['bias'].dtype == torch.float32
    for name, exact in truth.items():
        assert_flash_rule(name, got[name], lowp[name], exact, rtol=2e-2,
                          stored=stored_as(exact, got[name].dtype))


def test_under_autocast():
    """Under bf16 autocast the op runs on bf16 activations and float32 parameters, with float32
    parameter gradients and float32 gradients for float32 activations (autograd casts them back)."""
    hw = (3, 6)
    args, flags, _ = _inputs(1, hw, 12, 'all', seed=4)
    leaves = {k: v.clone().requires_grad_() for k, v in args.items()}
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        out = _triton(leaves['x'], leaves['weight'], leaves['bias'], hw, leaves['residual'], leaves['gate'],
                      **flags)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert all(v.grad.dtype == torch.float32 for v in leaves.values())


@pytest.mark.parametrize('num_chunks,hw', [(1, (6, 11)), (3, (6, 11)), (1000, (17, 16))])
def test_chunks_of_the_weight_gradient(num_chunks, hw):
    """One chunk, a few, and more asked for than there are tiles (clamped to 34, more than the
    reducing kernel adds at once): the partial weight and bias gradients are combined right."""
    args, flags, grad = _inputs(2, hw, 24, 'all', seed=5)
    cfg = dwconv_launch_config(2, hw[0], hw[1], 24, torch.float32, DEVICE, num_chunks)
    assert cfg.num_chunks == min(num_chunks, -(-2 * hw[0] * hw[1] // cfg.map_block_n))
    x, w, b, r, g = (args[k] for k in GRADS)
    dx, dw, db, dres, dgate = dwconv_bwd(grad, x, w, b, hw, r, g, flags['skip'], flags['act'], cfg)
    truth = _float64(args, flags, hw, grad)
    ref32 = _run(dwconv_tokens_ref, args, flags, hw, grad)
    for name, got in zip(GRADS, (dx, dw, db, dres, dgate)):
        err, err_ref = rel_rms(got, truth[name]), rel_rms(ref32[name], truth[name])
        assert err <= 4 * err_ref + 4e-7, f'{name}: rel RMS {err:.3e}, float32 reference {err_ref:.3e}'


def test_strided_inputs():
    """A residual, a gate, an upstream gradient and a bias that are not contiguous: strides are
    honoured."""
    hw = (5, 6)
    args, flags, grad = _inputs(2, hw, 12, 'all', seed=6)

    def transposed(t):   # the same values with batch-minor strides
        return t.transpose(0, 1).contiguous().transpose(0, 1)

    x, w, b, r, g = (args[k] for k in GRADS)
    r_t, g_t, grad_t = transposed(r), transposed(g), transposed(grad)
    b = torch.stack([b, torch.zeros_like(b)], dim=1)[:, 0]
    assert not (r_t.is_contiguous() or g_t.is_contiguous() or grad_t.is_contiguous() or b.is_contiguous())
    out = torch.ops.mmmila.dwconv_tokens_triton(x, w, b, *hw, r_t, g_t, flags['skip'], flags['act'])
    grads = torch.ops.mmmila.dwconv_tokens_triton_backward(grad_t, x, w, b, *hw, r_t, g_t, flags['skip'],
                                                           flags['act'])
    ref32 = _run(dwconv_tokens_ref, args, flags, hw, grad)
    truth = _float64(args, flags, hw, grad)
    for name, got in zip(('out',) + GRADS, (out,) + grads):
        err, err_ref = rel_rms(got, truth[name]), rel_rms(ref32[name], truth[name])
        assert err <= 4 * err_ref + 4e-7, f'{name}: rel RMS {err:.3e}, float32 reference {err_ref:.3e}'


@pytest.mark.parametrize('B,hw,C', [(0, (3, 4), 12), (2, (0, 5), 12), (1, (2, 3), 0)])
def test_empty_inputs(B, hw, C):
    """An empty batch, map or channel axis: no launch; correctly shaped results, zero parameter
    gradients."""
    args, flags, grad = _inputs(B, hw, C, 'all', seed=7)
    with LaunchCounter() as counter:
        got = _run(_triton, args, flags, hw, grad)
    assert sum(counter.launches.triton.values()) == 0
    assert got['out'].shape == (B, hw[0] * hw[1], C)
    assert got['x'].shape == got['gate'].shape == got['residual'].shape == (B, hw[0] * hw[1], C)
    assert not got['weight'].any() and not got['bias'].any()


@pytest.mark.parametrize('use', list(USES))
def test_launch_count(use):
    """One forward: one Triton launch and no aten call that does work; one backward: two launches
    (and again no aten work but allocations)."""
    hw = (4, 5)
    args, flags, grad = _inputs(2, hw, 24, use, seed=8)
    leaves = {k: None if v is None else v.detach().clone().requires_grad_() for k, v in args.items()}
    call = (leaves['x'], leaves['weight'], leaves['bias'], hw, leaves['residual'], leaves['gate'])
    _triton(*call, **flags).backward(grad)   # one-off work (compiling, caches) left out
    for leaf in leaves.values():
        if leaf is not None:
            leaf.grad = None   # the counted backward stores its gradients instead of adding them
    with LaunchCounter() as fwd:
        out = _triton(*call, **flags)
    with LaunchCounter() as bwd:
        out.backward(grad)
    assert sum(fwd.launches.triton.values()) == 1 and not fwd.launches.aten, fwd.launches
    assert sum(bwd.launches.triton.values()) == 2 and not bwd.launches.aten, bwd.launches


@pytest.mark.parametrize('use', ['dwc', 'lepe+gate', 'all'])
def test_opcheck(use):
    args, flags, grad = _inputs(2, (3, 5), 12, use, seed=9)
    x, w, b, r, g = (None if v is None else v.requires_grad_() for v in (args[k] for k in GRADS))
    torch.library.opcheck(torch.ops.mmmila.dwconv_tokens_triton.default,
                          (x, w, b, 3, 5, r, g, flags['skip'], flags['act']), test_utils=OPCHECKS)
    torch.library.opcheck(torch.ops.mmmila.dwconv_tokens_triton_backward.default,
                          (grad, x, w, b, 3, 5, r, g, flags['skip'], flags['act']), test_utils=OPCHECKS)


@pytest.mark.parametrize('B,hw,C', [(1, (1, 1), 12), (2, (7, 11), 64), (2, (56, 56), 512),
                                    (1, (100, 100), 24)])
def test_launch_config(B, hw, C):
    cfg = dwconv_launch_config(B, hw[0], hw[1], C, torch.bfloat16, 'cpu')
    tokens = B * hw[0] * hw[1]
    assert cfg.block_c in (16, 32, 64) and C <= cfg.block_c or cfg.block_c == 64
    assert cfg.chunk_tokens % cfg.map_block_n == 0
    assert (cfg.num_chunks - 1) * cfg.chunk_tokens < tokens <= cfg.num_chunks * cfg.chunk_tokens
    assert dwconv_launch_config(B, hw[0], hw[1], C, torch.bfloat16, 'cpu') is cfg   # cached
