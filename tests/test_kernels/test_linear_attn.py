"""Triton kernels vs the float64 oracle, forward and backward (CPU: Triton interpreter; else CUDA);
16-bit inputs also vs the reference run in the same dtype.

Shapes are small because the interpreter runs every program in Python; N is never a multiple of the
32- or 64-token blocks, H != W, B > 1, 1 to 8 heads. The default number of reduction chunks on CPU is 4, so
the partial-sum combination is exercised as on a GPU.
"""
from __future__ import annotations

import pytest
import torch

from mmmila.bench.float64_attention import attention_f64_outputs
from mmmila.kernels import device_problem, input_problem, launch_config, mila_linear_attention_triton
from mmmila.ops import mila_linear_attention_ref

from ..test_ops.helpers import (assert_flash_rule, assert_rel_close, float64_truth, make_inputs,
                                outputs_and_grads)
from .helpers import DEVICE, require_runnable_kernels, stored_as

# (B, (H, W), nh, num_chunks)
CASES_F32 = [
    (2, (7, 11), 2, None),     # N = 77: full blocks and a 13-token tail; 2 chunks
    (1, (5, 13), 1, None),     # one head, C = 32: its pairs take rows *and* columns
    (1, (12, 11), 3, 1),       # N = 132 in a single chunk of 5 blocks
    (2, (3, 5), 8, None),      # 8 heads (C = 256), N smaller than one block
    (1, (9, 10), 4, 7),        # more chunks asked for than blocks: clamped
]


@pytest.fixture(autouse=True, scope='module')
def _kernels_runnable():
    require_runnable_kernels()


def _run(qk, v, g, hw, nh, num_chunks=None):
    def fn(a, b):
        out = mila_linear_attention_triton(a, b, hw, nh, num_chunks=num_chunks)
        assert 'mmmila_linear_attention_triton' in type(out.grad_fn).__name__   # no fallback
        return out
    return outputs_and_grads(fn, qk, v, g)


@pytest.mark.parametrize('batch,hw,nh,num_chunks', CASES_F32)
def test_float32(batch, hw, nh, num_chunks):
    qk, v, g = make_inputs(batch, hw, nh, device=DEVICE)
    kern = _run(qk, v, g, hw, nh, num_chunks)
    ref = outputs_and_grads(mila_linear_attention_ref, qk, v, g, hw, nh)
    truth = float64_truth(qk, v, g, hw, nh)
    for name, a, b, c in zip(('out', 'dqk', 'dv'), kern, ref, truth):
        assert a.dtype == torch.float32
        assert_rel_close(f'{name} vs reference', a, b, 1e-4)
        assert_rel_close(f'{name} vs float64', a, c, 1e-4)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    hw, nh = (7, 11), 2
    qk, v, g = make_inputs(2, hw, nh, dtype=dtype, device=DEVICE, scale=3.0)
    kern = _run(qk, v, g, hw, nh)
    lowp = outputs_and_grads(mila_linear_attention_ref, qk, v, g, hw, nh)
    truth = float64_truth(qk, v, g, hw, nh)
    for name, a, b, c in zip(('out', 'dqk', 'dv'), kern, lowp, truth):
        assert a.dtype == dtype
        assert_flash_rule(name, a, b, c, rtol=2e-2, stored=stored_as(c, dtype))


def test_chunking_does_not_change_the_result():
    hw, nh = (10, 13), 2
    qk, v, g = make_inputs(1, hw, nh, device=DEVICE)
    one = _run(qk, v, g, hw, nh, num_chunks=1)
    many = _run(qk, v, g, hw, nh, num_chunks=3)
    for a, b in zip(one, many):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_strided_inputs():
    """qk and v as views with gaps, a non-contiguous upstream gradient: strides are honoured."""
    hw, nh = (6, 11), 2
    qk, v, g = make_inputs(2, hw, nh, device=DEVICE)
    big = torch.randn(2, qk.shape[1], 3 * qk.shape[2], device=DEVICE)
    big[..., 1::3] = qk
    qk_view = big[..., 1::3]
    v_t = v.transpose(0, 1).contiguous().transpose(0, 1)
    g_t = g.transpose(0, 1).contiguous().transpose(0, 1)
    assert not (qk_view.is_contiguous() or v_t.is_contiguous() or g_t.is_contiguous())
    qk_view = qk_view.detach().requires_grad_()
    out = mila_linear_attention_triton(qk_view, v_t, hw, nh)
    out.backward(g_t)
    truth = float64_truth(qk, v, g, hw, nh)
    assert_rel_close('out', out.detach(), truth[0], 1e-4)
    assert_rel_close('dqk', qk_view.grad, truth[1], 1e-4)


def test_saves_only_inputs_and_per_head_sums():
    qk, v, _ = make_inputs(2, (5, 7), 2, device=DEVICE)
    out = mila_linear_attention_triton(qk.requires_grad_(), v, (5, 7), 2)
    assert [tuple(t.shape) for t in out.grad_fn.saved_tensors] == [
        (2, 35, 128), (2, 35, 64), (2, 2, 32, 32), (2, 2, 32)]


def test_forward_sums_match_the_float64_oracle():
    """The saved S and m are k_r^T v / N and mean(k) per head (the op's second and third outputs)."""
    hw, nh = (4, 9), 2
    qk, v, _ = make_inputs(1, hw, nh, device=DEVICE)
    out = mila_linear_attention_triton(qk.requires_grad_(), v, hw, nh)
    _, _, s, m = out.grad_fn.saved_tensors
    assert s.dtype == torch.float32 and m.dtype == torch.float32
    _, s64, m64 = attention_f64_outputs(qk.detach(), v, hw, nh)
    assert_rel_close('S', s, s64, 1e-5)
    assert_rel_close('m', m, m64, 1e-5)


def test_input_problems():
    """What only the kernels cannot take (malformed inputs: tests/test_ops/test_checks.py)."""
    qk, v, _ = make_inputs(1, (4, 4), 2, device=DEVICE)
    assert input_problem(qk, v, 2) is None
    assert input_problem(qk, v, 4) == ('the Triton kernels need a head dim in (32,) (that of MILA), '
                                       'got C / num_heads = 64 / 4 = 16')
    assert input_problem(qk.double(), v, 2) == ('qk has dtype torch.float64; the Triton kernels take '
                                                'float32, float16 or bfloat16')
    assert device_problem(torch.device('meta')) == ('the Triton kernels run on CUDA devices (or CPU under '
                                                    'TRITON_INTERPRET=1), not meta')
    with pytest.raises(ValueError, match='^mila_linear_attention_triton: the Triton kernels need a head dim'):
        mila_linear_attention_triton(qk, v, (4, 4), 4)


@pytest.mark.parametrize('n,bh,chunks', [(1, 2, None), (77, 2, None), (64 * 40 + 3, 1, None),
                                          (1000, 4, 100), (640, 2, 3)])
def test_launch_config(n, bh, chunks):
    cfg = launch_config(n, bh, 32, torch.float32, torch.device('cpu'), chunks)
    assert cfg.chunk_tokens % cfg.reduce_block_n == 0
    assert (cfg.num_chunks - 1) * cfg.chunk_tokens < n <= cfg.num_chunks * cfg.chunk_tokens
    assert cfg.dot_precision == 'ieee'


@pytest.mark.slow
@pytest.mark.parametrize('batch,hw,nh', [(1, (7, 7), 16), (2, (25, 38), 2), (1, (56, 56), 1),
                                         (1, (37, 111), 2)])
def test_float32_larger(batch, hw, nh):
    """Map sizes from 7x7 to 56x56 and a long thin one (N = 49, 950, 3136, 4107), up to 16 heads; slow under
    the interpreter."""
    qk, v, g = make_inputs(batch, hw, nh, device=DEVICE)
    kern = _run(qk, v, g, hw, nh)
    truth = float64_truth(qk, v, g, hw, nh)
    for name, a, b in zip(('out', 'dqk', 'dv'), kern, truth):
        assert_rel_close(name, a, b, 1e-4)


@pytest.mark.slow
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_precision_larger(dtype):
    hw, nh = (25, 38), 4
    qk, v, g = make_inputs(2, hw, nh, dtype=dtype, device=DEVICE, scale=3.0)
    kern = _run(qk, v, g, hw, nh)
    lowp = outputs_and_grads(mila_linear_attention_ref, qk, v, g, hw, nh)
    truth = float64_truth(qk, v, g, hw, nh)
    for name, a, b, c in zip(('out', 'dqk', 'dv'), kern, lowp, truth):
        assert_flash_rule(name, a, b, c, rtol=2e-2, stored=stored_as(c, dtype))


@pytest.mark.cuda
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_stage1_shape(dtype):
    """MILA-T stage 1 at 512 x 512 on the GPU (compiled kernels, TF32 dots for 16-bit inputs)."""
    hw, nh = (128, 128), 2
    qk, v, g = make_inputs(2, hw, nh, dtype=dtype, device='cuda')
    kern = _run(qk, v, g, hw, nh)
    lowp = outputs_and_grads(mila_linear_attention_ref, qk, v, g, hw, nh)
    truth = float64_truth(qk, v, g, hw, nh)
    for name, a, b, c in zip(('out', 'dqk', 'dv'), kern, lowp, truth):
        if dtype == torch.float32:
            assert_rel_close(name, a, c, 1e-4)
        else:
            assert_flash_rule(name, a, b, c, rtol=2e-2, stored=stored_as(c, dtype))
