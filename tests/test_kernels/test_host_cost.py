"""Host cost of the Triton op: a call is its kernel launches and the allocations of their outputs,
and a call of a known shape computes no launch configuration; the autotuner's search and cache."""
from __future__ import annotations

import inspect

import pytest
import torch
from triton.runtime.jit import JITFunction, KernelInterface

from mmmila.bench.launches import LaunchCounter, count_launches
from mmmila.kernels import common, dwconv, linear_attn_bwd, linear_attn_fwd, linear_chains, tuning

from ..conftest import seed_for

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
FWD = {'_mila_attn_fwd_reduce_kernel': 1, '_mila_attn_fwd_map_kernel': 1}
BWD = {'_mila_attn_bwd_reduce_kernel': 1, '_mila_attn_bwd_map_kernel': 1}


def _leaves(batch, hw, nh, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed_for(hw[0] * 100 + hw[1]))
    n, c = hw[0] * hw[1], 32 * nh
    return [torch.randn(batch, n, k, generator=gen).to(DEVICE, dtype).requires_grad_() for k in (2 * c, c)]


@pytest.mark.parametrize('op', ['triton', 'torch'])
@pytest.mark.parametrize('hw,nh,dtype', [((8, 8), 2, torch.float32), ((5, 13), 4, torch.bfloat16)])
def test_forward_and_backward_launches(op, hw, nh, dtype):
    """Triton: two launches per pass and no ATen op that does work (the partial sums, 1/N and the
    gradients of S and m are handled in the kernels). The PyTorch op does its work in ATen ops inside
    the registered op: the counter sees them, so a count of 0 is not a blind spot."""
    qk, v = _leaves(2, hw, nh, dtype)
    fn = torch.ops.mmmila.linear_attention_triton if op == 'triton' else torch.ops.mmmila.linear_attention
    g = torch.ones(v.shape, dtype=dtype, device=DEVICE)
    torch.autograd.grad(fn(qk, v, hw[0], hw[1], nh)[0], (qk, v), g)   # warm-up: caches, compilation
    with LaunchCounter() as fwd:
        out = fn(qk, v, hw[0], hw[1], nh)[0]
    with LaunchCounter() as bwd:
        torch.autograd.grad(out, (qk, v), g)
    if op == 'triton':
        assert dict(fwd.launches.triton) == FWD and dict(bwd.launches.triton) == BWD
        assert fwd.launches.total == 2 and bwd.launches.total == 2, (fwd.launches.aten, bwd.launches.aten)
    else:
        assert not fwd.launches.triton and {'aten::bmm', 'aten::exp2_'} <= set(fwd.launches.aten)
        assert {'aten::bmm', 'aten::baddbmm_'} <= set(bwd.launches.aten)


def test_gradients_of_s_and_m_join_in_the_kernel():
    """A loss that uses S and m as well: their gradients are added by the reduction kernel, no
    ATen op runs (the op's autograd passes absent gradients as None, not as zeros)."""
    qk, v = _leaves(1, (5, 8), 2)
    op = torch.ops.mmmila.linear_attention_triton
    out, s, m = op(qk, v, 5, 8, 2)
    grads = (torch.ones_like(out), torch.full_like(s, 0.5), torch.full_like(m, 2.0))
    torch.autograd.grad((out, s, m), (qk, v), grads)   # warm-up
    out, s, m = op(qk, v, 5, 8, 2)
    launches = count_launches(lambda: torch.autograd.grad((out, s, m), (qk, v), grads))
    assert dict(launches.triton) == BWD and launches.total == 2, launches.aten


def test_the_chunk_counters_are_zero_after_each_launch():
    """The last program of each count resets it: the cached counters are all 0 between launches."""
    qk, v = _leaves(2, (15, 20), 2)
    out = torch.ops.mmmila.linear_attention_triton(qk, v, 15, 20, 2, 10)[0]
    torch.autograd.grad(out, (qk, v), torch.ones_like(out))
    counters = [buf for (device, _), buf in common._counters.items() if device == qk.device]
    assert counters and all(int(buf.abs().sum()) == 0 for buf in counters)


def test_a_known_shape_reuses_its_launch_configuration(monkeypatch):
    tuning.clear_cache()   # no shape known from other tests
    qk, v = (t.detach() for t in _leaves(1, (5, 7), 2))
    torch.ops.mmmila.linear_attention_triton(qk, v, 5, 7, 2)
    computed = []
    real = tuning.launch_config
    monkeypatch.setattr(tuning, 'launch_config', lambda *a, **k: computed.append(a) or real(*a, **k))
    torch.ops.mmmila.linear_attention_triton(qk, v, 5, 7, 2)
    assert computed == []
    torch.ops.mmmila.linear_attention_triton(qk[:, :30], v[:, :30], 5, 6, 2)   # a new shape
    assert [a[0] for a in computed] == [30]


def test_autotuning_is_off_by_default_and_only_on_cuda(monkeypatch):
    monkeypatch.delenv(tuning.ENV_VAR, raising=False)
    assert not tuning.autotune_requested(torch.device('cuda', 0))
    monkeypatch.setenv(tuning.ENV_VAR, '1')
    assert tuning.autotune_requested(torch.device('cuda', 0))
    assert not tuning.autotune_requested(torch.device('cpu'))
    monkeypatch.setenv(tuning.ENV_VAR, '0')
    assert not tuning.autotune_requested(torch.device('cuda', 0))


def test_autotuning_keeps_the_fastest_and_tunes_a_shape_once(monkeypatch):
    """With a made-up timing in which 16-token reduction tiles and 8 map warps are fastest (the
    defaults: 32 and 4), the search finds them, timing each candidate once; the choice is cached for
    the shape."""
    from mmmila.kernels.heuristics import TUNING_SPACE
    timed = []

    def fake_bench(fn):
        fn()    # launches the pass with the candidate's configuration: record it
        cfg = launched[-1]
        timed.append(cfg)
        return (cfg.reduce_block_n / 16) + (8 / cfg.map_warps) + (cfg.num_chunks / 2)

    launched = []
    monkeypatch.setattr(tuning, 'autotune_requested', lambda device: True)
    monkeypatch.setattr(tuning, 'bench_ms', fake_bench)
    tuning.clear_cache()
    try:
        qk, v = (t.detach() for t in _leaves(1, (16, 48), 2))
        cfg = tuning.config_for('fwd', qk, v, 2, None, run=launched.append)
        assert (cfg.reduce_block_n, cfg.map_warps) == (16, 8)
        assert len(timed) == 1 + sum(len(values) - 1 for values in TUNING_SPACE.values())
        (key, params), = tuning.tuned_choices().items()
        assert key[:3] == ('fwd', 48 * 16, 2) and (params.reduce_block_n, params.map_warps) == (16, 8)
        assert tuning.config_for('fwd', qk, v, 2, None, run=launched.append) is cfg
        assert len(timed) == 1 + sum(len(values) - 1 for values in TUNING_SPACE.values())
    finally:
        tuning.clear_cache()


def test_a_candidate_that_fails_is_passed_over():
    """A candidate the GPU cannot run (here: 64-token reduction tiles) is not chosen, nor fatal."""
    from mmmila.kernels.heuristics import default_params

    def time_of(params):
        if params.reduce_block_n == 64:
            raise RuntimeError('out of resources: shared memory')
        return params.reduce_block_n + params.block_n
    best, ms = tuning.tune(time_of, default_params('fwd', torch.bfloat16))
    assert (best.reduce_block_n, best.block_n) == (16, 32) and ms == 48


def test_every_launch_goes_through_the_launcher(monkeypatch):
    """A compiled kernel is launched through ``wrap_triton`` (so that a tracer records it); a kernel
    of the interpreter as it is (torch before 2.13 refuses it in ``wrap_triton``). Every kernel module
    launches through :func:`mmmila.kernels.common.launcher`."""
    wrapped = []
    monkeypatch.setattr(common, 'wrap_triton', lambda k: wrapped.append(k) or ('wrapped', k))

    def add(x_ptr):
        pass

    compiled = JITFunction(add)
    assert common.launcher(compiled) == ('wrapped', compiled) and wrapped == [compiled]
    interpreted = linear_attn_fwd._mila_attn_fwd_map_kernel
    if not isinstance(interpreted, JITFunction):      # this process runs the interpreter
        assert common.launcher(interpreted) is interpreted and wrapped == [compiled]
    for module in (dwconv, linear_attn_bwd, linear_attn_fwd, linear_chains):
        source = inspect.getsource(module)
        assert 'wrap_triton' not in source, module.__name__
        kernels = [name for name, obj in vars(module).items()
                   if name.endswith('_kernel') and isinstance(obj, KernelInterface)]
        assert kernels and all(f'launcher({name})[' in source for name in kernels), module.__name__
