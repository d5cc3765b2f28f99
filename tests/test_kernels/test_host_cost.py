"""Host cost of the Triton op: a call is its kernel launches and the allocations of their outputs,
and a call of a known shape computes no launch configuration."""
from __future__ import annotations

import pytest
import torch

from mmmila.bench.launch_count import CallCounter, attention_launches
from mmmila.kernels import tuning

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'


@pytest.mark.parametrize('hw,nh,dtype', [((8, 8), 2, torch.float32), ((5, 13), 4, torch.bfloat16)])
def test_forward_and_backward_are_two_launches_each(hw, nh, dtype):
    counts = attention_launches(hw, nh, batch=2, dtype=dtype, device=DEVICE)
    assert counts['fwd']['launches'] == ['_mila_attn_fwd_reduce_kernel', '_mila_attn_fwd_map_kernel']
    assert counts['bwd']['launches'] == ['_mila_attn_bwd_reduce_kernel', '_mila_attn_bwd_map_kernel']
    assert counts['fwd']['aten'] == [] and counts['bwd']['aten'] == []
    # out, S, m and the partial sums; dqk, dv, dS / N, dm / N and the partial sums
    assert len(counts['fwd']['allocations']) == 4 and len(counts['bwd']['allocations']) == 5


def test_the_chunk_counters_are_zero_after_each_launch():
    """The last program of each count resets it: the cached counters are all 0 between launches."""
    from mmmila.kernels import common
    qk = torch.randn(2, 300, 128, device=DEVICE).requires_grad_()
    v = torch.randn(2, 300, 64, device=DEVICE).requires_grad_()
    out = torch.ops.mmmila.linear_attention_triton(qk, v, 15, 20, 2, 10)[0]
    torch.autograd.grad(out, (qk, v), torch.ones_like(out))
    counters = [buf for (device, _), buf in common._counters.items() if device == qk.device]
    assert counters and all(int(buf.abs().sum()) == 0 for buf in counters)


def test_the_counter_sees_inside_a_registered_op():
    """The PyTorch op does its work in ATen ops, inside the registered op: they are counted."""
    counts = attention_launches((8, 8), 2, device='cpu', backend='torch')
    assert counts['fwd']['launches'] == [] and counts['bwd']['launches'] == []
    assert {'bmm', 'exp2_'} <= set(counts['fwd']['aten'])
    assert {'bmm', 'baddbmm_'} <= set(counts['bwd']['aten'])


def test_gradients_of_s_and_m_join_in_the_kernel():
    """A loss that uses S and m as well: their gradients are added by the reduction kernel, no
    ATen op runs (the op's autograd passes absent gradients as None, not as zeros)."""
    qk = torch.randn(1, 40, 128, device=DEVICE).requires_grad_()
    v = torch.randn(1, 40, 64, device=DEVICE).requires_grad_()
    op = torch.ops.mmmila.linear_attention_triton
    out, s, m = op(qk, v, 5, 8, 2)
    grads = (torch.ones_like(out), torch.full_like(s, 0.5), torch.full_like(m, 2.0))
    torch.autograd.grad((out, s, m), (qk, v), grads)   # warm-up
    out, s, m = op(qk, v, 5, 8, 2)
    with CallCounter() as counted:
        torch.autograd.grad((out, s, m), (qk, v), grads)
    assert counted.aten == [] and len(counted.launches) == 2


def test_a_known_shape_reuses_its_launch_configuration(monkeypatch):
    tuning.clear_cache()   # no shape known from other tests
    qk = torch.randn(1, 35, 128, device=DEVICE)
    v = torch.randn(1, 35, 64, device=DEVICE)
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
    """With a made-up timing in which 16-token reduction tiles and 4 map warps are fastest, the search
    finds them from the defaults, timing each candidate once; the choice is cached for the shape."""
    from mmmila.kernels.heuristics import TUNING_SPACE
    timed = []

    def fake_bench(fn):
        fn()    # launches the pass with the candidate's configuration: record it
        cfg = launched[-1]
        timed.append(cfg)
        return (cfg.reduce_block_n / 16) + (cfg.map_warps / 4) + (cfg.num_chunks / 2)

    launched = []
    monkeypatch.setattr(tuning, 'autotune_requested', lambda device: True)
    monkeypatch.setattr(tuning, 'bench_ms', fake_bench)
    tuning.clear_cache()
    try:
        qk = torch.randn(1, 48 * 16, 128, device=DEVICE)
        v = torch.randn(1, 48 * 16, 64, device=DEVICE)
        cfg = tuning.config_for('fwd', qk, v, 2, None, run=launched.append)
        assert (cfg.reduce_block_n, cfg.map_warps) == (16, 4)
        assert len(timed) == 1 + sum(len(values) - 1 for values in TUNING_SPACE.values())
        (key, params), = tuning.tuned_choices().items()
        assert key[:3] == ('fwd', 48 * 16, 2) and (params.reduce_block_n, params.map_warps) == (16, 4)
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

