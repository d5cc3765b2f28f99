"""The Triton kernels of the matrix-product chains, ``torch.ops.mmmila.norm_linears_triton`` and
``gelu_linear_triton`` (CPU: Triton interpreter; else CUDA): outputs and every gradient against
float64, judged by the PyTorch ops' error on the same draw; 16-bit and autocast; one and several
splits of the weight gradient's rows; empty inputs; the launch count; opcheck; and the backend
choice.

Sizes are small (the interpreter runs every program in Python) and never multiples of the tiles:
K = 24 and N = 40 leave features of a tile masked, 2 x 37 rows leave rows masked.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from mmmila.bench.launches import count_launches
from mmmila.kernels import chain_launch_config
from mmmila.kernels.linear_chains import norm_linears_bwd
from mmmila.ops import gelu_linear, norm_linears
from mmmila.ops.dispatch import chain_triton_problem

from ..conftest import seed_for
from ..test_ops.helpers import assert_flash_rule
from .helpers import DEVICE, OPCHECKS, assert_float32_rule, require_runnable_kernels, stored_as


@pytest.fixture(autouse=True, scope='module')
def _kernels_runnable():
    require_runnable_kernels()


def _modules(K, outs, hidden_out, dtype, seed):
    """A LayerNorm with non-trivial affine parameters, its linear layers and a GELU-fed ``fc2``."""
    torch.manual_seed(seed_for(seed))
    norm = nn.LayerNorm(K)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    mods = [norm] + [nn.Linear(K, n) for n in outs] + [nn.Linear(outs[-1], hidden_out)]
    return [m.to(DEVICE, dtype) for m in mods]


def _run(mods, x, backend, autocast=None):
    """Outputs and every gradient (x, then each parameter) of ``gelu_linear(norm_linears(x)[-1])``
    and the other outputs, under a loss that weighs each output element differently."""
    norm, *lins, fc2 = mods
    for m in mods:
        m.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    with torch.autocast(DEVICE, dtype=autocast, enabled=autocast is not None):
        outs = norm_linears(x, norm, lins, backend=backend)
        y = gelu_linear(outs[-1], fc2, backend=backend)
    results = [y, *outs]
    loss = sum((r.float() * torch.linspace(-1, 1, r.numel(), device=DEVICE).view(r.shape)).sum()
               for r in results)
    loss.backward()
    return {f'out{i}': r.detach() for i, r in enumerate(results)} | {'x': x.grad} | {
        f'{type(m).__name__}{i}.{n}': p.grad for i, m in enumerate(mods) for n, p in m.named_parameters()}


def _float64(mods, x):
    return _run([m.double() for m in _copies(mods)], x.double(), 'torch')


def _copies(mods):
    import copy
    return [copy.deepcopy(m) for m in mods]


@pytest.mark.parametrize('shape,K,outs', [((2, 37), 24, (24, 40)), ((1, 5), 16, (64,)), ((3, 1), 40, (17, 9)),
                                          ((1, 300), 64, (256,))])
def test_float32(shape, K, outs):
    """No further from float64 than the PyTorch ops in float32 on the same draw (up to 4x: the
    orders of the float32 sums differ), plus a few float32 rounding steps where those are exact."""
    mods = _modules(K, outs, 13, torch.float32, seed=1)
    x = torch.randn(*shape, K, generator=torch.Generator().manual_seed(seed_for(2))).to(DEVICE)
    got = _run(mods, x, 'triton')
    ref32 = _run(_copies(mods), x, 'torch')
    truth = _float64(mods, x)
    assert_float32_rule(got, ref32, truth)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    """FlashAttention's rule against the PyTorch ops run in the same dtype (the parameters too)."""
    mods = _modules(24, (24, 40), 13, dtype, seed=3)
    x = torch.randn(2, 21, 24, generator=torch.Generator().manual_seed(seed_for(4))).to(DEVICE, dtype)
    got = _run(mods, x, 'triton')
    lowp = _run(_copies(mods), x, 'torch')
    truth = _float64(mods, x)
    for name, exact in truth.items():
        assert got[name].dtype == dtype, name
        assert_flash_rule(name, got[name], lowp[name], exact, rtol=3e-2, stored=stored_as(exact, dtype))


def test_autocast_reads_float32_parameters_and_casts_only_activations():
    """Under bf16 autocast the ops run in bf16 with float32 parameters read as they are: no cast at
    all for bf16 activations, float32 parameter gradients, and results within FlashAttention's rule
    of the PyTorch ops under the same autocast (which cast the weights)."""
    mods = _modules(24, (24, 24), 13, torch.float32, seed=5)
    x = torch.randn(2, 15, 24, generator=torch.Generator().manual_seed(seed_for(6))).to(DEVICE).bfloat16()
    got = _run(mods, x, 'triton', autocast=torch.bfloat16)
    assert all(got[n].dtype == torch.float32 for n in got if '.' in n)
    assert got['out0'].dtype == torch.bfloat16
    launches = count_launches(lambda: _run(mods, x, 'triton', autocast=torch.bfloat16))
    # the only casts are the loss's: float() of the three outputs, and their gradients cast back
    lowp = _run(_copies(mods), x, 'torch', autocast=torch.bfloat16)
    truth = _float64(mods, x)
    for name, exact in truth.items():
        assert_flash_rule(name, got[name], lowp[name], exact, rtol=3e-2,
                          stored=stored_as(exact, got[name].dtype))
    assert launches.casts == 2 * 3


@pytest.mark.parametrize('rows', [5, 37 * 3, 700])
def test_splits_of_the_weight_gradient(rows):
    """One split, a few, and many (more than the dL/dx kernel's programs): the partial weight,
    bias, scale and shift gradients are added right (the float32 rule against the PyTorch op), and
    the same way every time (bit for bit)."""
    mods = _modules(24, (24, 40), 13, torch.float32, seed=7)
    norm, lin0, lin1, _ = mods
    g = torch.Generator().manual_seed(seed_for(8))
    x = torch.randn(rows, 24, generator=g).to(DEVICE)
    grads = [torch.randn(rows, n, generator=g).to(DEVICE) for n in (24, 40)]
    cfg = chain_launch_config(rows, 24, [24, 40], torch.float32, torch.device(DEVICE))
    assert (cfg.splits > 1) == (rows > 32)
    args = (grads, x, norm.weight, norm.bias, norm.eps, [lin0.weight, lin1.weight], [lin0.bias, lin1.bias])
    first = norm_linears_bwd(*args, cfg)
    again = norm_linears_bwd(*args, cfg)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    ref32 = torch.ops.mmmila.norm_linears_backward(*args)
    xd = x.double().requires_grad_()
    params = [p.detach().double().requires_grad_() for p in (norm.weight, norm.bias, lin0.weight, lin1.weight,
                                                             lin0.bias, lin1.bias)]
    n = nn.functional.layer_norm(xd, (24,), params[0], params[1], norm.eps)
    outs = [nn.functional.linear(n, params[2], params[4]), nn.functional.linear(n, params[3], params[5])]
    torch.autograd.backward(outs, [gr.double() for gr in grads])
    names = ('x', 'norm weight', 'norm bias', 'weight 0', 'weight 1', 'bias 0', 'bias 1')
    truth = dict(zip(names, [xd.grad] + [p.grad for p in params]))
    assert_float32_rule(dict(zip(names, first)), dict(zip(names, ref32)), truth)


def test_the_counters_are_zero_after_the_backward():
    """The sums of partials count their finished programs in the counters the attention's kernels
    share (:func:`mmmila.kernels.common.chunk_counters`); the last program resets each, so all are 0
    after a backward with several splits and several dL/dx programs."""
    from mmmila.kernels import common

    mods = _modules(24, (24, 40), 13, torch.float32, seed=12)
    x = torch.randn(3, 200, 24, generator=torch.Generator().manual_seed(seed_for(13))).to(DEVICE)
    cfg = chain_launch_config(600, 24, [24, 40], torch.float32, torch.device(DEVICE))
    assert cfg.splits > 1 and cfg.dx_programs > 1
    _run(mods, x, 'triton')
    counters = [buf for (device, _), buf in common._counters.items() if device == x.device]
    assert counters and all(int(buf.abs().sum()) == 0 for buf in counters)


@pytest.mark.parametrize('shape', [(0, 5), (2, 0)])
def test_empty_inputs(shape):
    mods = _modules(24, (24, 40), 13, torch.float32, seed=9)
    x = torch.zeros(*shape, 24, device=DEVICE)
    got = _run(mods, x, 'triton')
    assert got['out0'].shape == (*shape, 13) and got['out2'].shape == (*shape, 40)
    assert got['x'].shape == x.shape
    assert all(float(got[n].abs().sum()) == 0 for n in got if '.' in n)


def test_launch_count():
    """Forward one launch per op; backward two (the bias gradients reduced in the weight gradients'
    launch, the LayerNorm's inside dL/dx): nothing else runs for either op."""
    mods = _modules(24, (24, 40), 13, torch.float32, seed=10)
    norm, lin0, lin1, fc2 = mods
    x = torch.randn(2, 21, 24, device=DEVICE, requires_grad=True)

    def step():
        a, b = norm_linears(x, norm, [lin0, lin1], backend='triton')
        c = gelu_linear(b, fc2, backend='triton')
        torch.autograd.backward([a, c], [torch.ones_like(a), torch.ones_like(c)])

    step()
    for m in mods:
        m.zero_grad(set_to_none=True)
    x.grad = None
    launches = count_launches(step)
    assert dict(launches.triton) == {'_chain_fwd_kernel': 2, '_norm_dx_kernel': 1, '_gelu_dx_kernel': 1,
                                     '_chain_dw_kernel': 2}
    # the two ones_like of the loss's gradients; b's gradient is gelu_linear's dh alone (no sum)
    assert dict(launches.aten) == {'aten::ones_like': 2}


def test_opcheck():
    mods = _modules(24, (24, 40), 13, torch.float32, seed=11)
    norm, lin0, lin1, fc2 = mods
    x = torch.randn(2, 5, 24, device=DEVICE, requires_grad=True)
    torch.library.opcheck(torch.ops.mmmila.norm_linears_triton.default,
                          (x, norm.weight, norm.bias, 1e-5, [lin0.weight, lin1.weight],
                           [lin0.bias, lin1.bias]),
                          test_utils=OPCHECKS)
    h = torch.randn(2, 5, 40, device=DEVICE, requires_grad=True)
    torch.library.opcheck(torch.ops.mmmila.gelu_linear_triton.default, (h, fc2.weight, fc2.bias),
                          test_utils=OPCHECKS)


def test_what_the_kernels_cannot_take_is_named():
    x = torch.zeros(2, 3, 2 * 2048, device=DEVICE)
    w = torch.zeros(4, 2 * 2048, device=DEVICE)
    assert 'at most 2048 features' in chain_triton_problem(x, [w], norm=True)
    assert chain_triton_problem(x, [w], norm=False) is None   # GELU's kernels tile the features
    assert 'at most 2 linear layers' in chain_triton_problem(x[..., :8], [w[:, :8]] * 3, norm=True)
    assert 'dtype torch.float64' in chain_triton_problem(x.double(), [w], norm=False)
    norm = nn.LayerNorm(8).to(DEVICE)
    with pytest.raises(RuntimeError, match="backend 'triton' cannot run: the Triton kernels take at most 2"):
        norm_linears(x[..., :8], norm, [nn.Linear(8, 2).to(DEVICE)] * 3, backend='triton')
