"""The memory-lean PyTorch path vs the reference vs an independent float64 autograd version."""
from __future__ import annotations

import pytest
import torch

from mmmila.ops import chunks, cpu_fused, mila_linear_attention_cpu, mila_linear_attention_ref

from .helpers import assert_flash_rule, assert_rel_close, float64_truth, make_inputs, outputs_and_grads

# (B, (H, W), nh): B > 1, H != W, 1 to 8 heads, odd N.
SHAPES = [(1, (5, 7), 1), (2, (7, 11), 2), (2, (3, 13), 3), (1, (6, 4), 4), (2, (4, 5), 8)]


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 2 rows, so that every test crosses chunk boundaries (with a ragged last chunk)."""
    monkeypatch.setattr(cpu_fused, '_chunk_rows', lambda b, hw, c, dev: 2)


@pytest.mark.parametrize('batch,hw,nh', SHAPES)
def test_float64_three_ways(batch, hw, nh, small_chunks):
    """cpu_fused (float64), the reference (float32 inside) and plain float64 autograd agree."""
    qk, v, g = make_inputs(batch, hw, nh, dtype=torch.float64)
    truth = float64_truth(qk, v, g, hw, nh)
    fused = outputs_and_grads(mila_linear_attention_cpu, qk, v, g, hw, nh)
    ref = outputs_and_grads(mila_linear_attention_ref, qk, v, g, hw, nh)
    for name, a, b, c in zip(('out', 'dqk', 'dv'), fused, ref, truth):
        assert_rel_close(f'fused64 {name}', a, c, 1e-6)   # float32 cos/sin tables only
        assert_rel_close(f'ref {name}', b, c, 1e-5)       # float32 arithmetic


@pytest.mark.parametrize('batch,hw,nh', SHAPES[1:3])
def test_float32_matches_reference(batch, hw, nh, small_chunks):
    qk, v, g = make_inputs(batch, hw, nh)
    truth = float64_truth(qk, v, g, hw, nh)
    fused = outputs_and_grads(mila_linear_attention_cpu, qk, v, g, hw, nh)
    ref = outputs_and_grads(mila_linear_attention_ref, qk, v, g, hw, nh)
    for name, a, b, c in zip(('out', 'dqk', 'dv'), fused, ref, truth):
        assert a.dtype == torch.float32
        assert_rel_close(f'fused vs ref {name}', a, b, 1e-4)
        assert_rel_close(f'fused vs f64 {name}', a, c, 1e-5)


def test_chunk_rule_on_an_odd_map(monkeypatch):
    """The chunking rule itself (not a patched one) on a map of 61 columns with a ragged last chunk."""
    hw, nh = (80, 61), 2
    monkeypatch.setattr(chunks, 'CHUNK_ELEMENTS', 64 * 61 * 7 // torch.get_num_threads())
    rows = cpu_fused._chunk_rows(1, hw, 64, torch.device('cpu'))
    assert 1 < rows < hw[0] and hw[0] % rows
    qk, v, g = make_inputs(1, hw, nh)
    fused = outputs_and_grads(mila_linear_attention_cpu, qk, v, g, hw, nh)
    ref = outputs_and_grads(mila_linear_attention_ref, qk, v, g, hw, nh)
    for name, a, b in zip(('out', 'dqk', 'dv'), fused, ref):
        assert_rel_close(name, a, b, 1e-4)


def test_gradcheck_float64(small_chunks):
    hw, nh = (3, 6), 2
    qk, v, _ = make_inputs(1, hw, nh, head_dim=4, dtype=torch.float64)
    qk.requires_grad_()
    v.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: mila_linear_attention_cpu(a, b, hw, nh), (qk, v),
                                    fast_mode=True)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_low_precision(dtype):
    """16-bit inputs: float32 accumulation inside, output in the input dtype, within 2e-2."""
    hw, nh = (9, 8), 2
    qk, v, g = make_inputs(2, hw, nh, dtype=dtype, scale=3.0)
    truth = float64_truth(qk, v, g, hw, nh)
    fused = outputs_and_grads(mila_linear_attention_cpu, qk, v, g, hw, nh)
    ref = outputs_and_grads(mila_linear_attention_ref, qk, v, g, hw, nh)
    for name, a, b, c in zip(('out', 'dqk', 'dv'), fused, ref, truth):
        assert a.dtype == dtype
        assert_flash_rule(name, a, b, c, rtol=2e-2)


def test_saves_only_inputs_and_per_head_sums():
    """The autograd contract: qk, v, S (B, nh, d, d) and m (B, nh, d), nothing of size N x C more."""
    qk, v, _ = make_inputs(2, (7, 5), 2)
    qk.requires_grad_()
    out = mila_linear_attention_cpu(qk, v, (7, 5), 2)
    saved = out.grad_fn.saved_tensors
    assert [tuple(t.shape) for t in saved] == [(2, 35, 128), (2, 35, 64), (2, 2, 32, 32), (2, 2, 32)]
    assert saved[0].data_ptr() == qk.data_ptr() and saved[1].data_ptr() == v.data_ptr()


def test_mixed_dtypes_and_strided_grad(small_chunks):
    """qk in bfloat16 with v in float32 (autocast-like), and a non-contiguous upstream gradient."""
    hw, nh = (6, 7), 2
    qk, v, g = make_inputs(2, hw, nh)
    g_strided = g.transpose(0, 1).contiguous().transpose(0, 1)
    assert not g_strided.is_contiguous()
    a = outputs_and_grads(mila_linear_attention_cpu, qk, v, g_strided, hw, nh)
    b = outputs_and_grads(mila_linear_attention_cpu, qk, v, g, hw, nh)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    out, dqk, dv = outputs_and_grads(mila_linear_attention_cpu, qk.bfloat16(), v, g, hw, nh)
    assert out.dtype == torch.float32 and dqk.dtype == torch.bfloat16 and dv.dtype == torch.float32
    ref = outputs_and_grads(mila_linear_attention_ref, qk.bfloat16(), v, g, hw, nh)
    for name, x, y in zip(('out', 'dqk', 'dv'), (out, dqk, dv), ref):
        assert_rel_close(name, x, y, 1e-2)
