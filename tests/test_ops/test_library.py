"""The registered ops torch.ops.mmmila.linear_attention(_triton): opcheck, fake, autograd, empty inputs."""
from __future__ import annotations

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx
from torch.library import opcheck

import mmmila.ops  # noqa: F401  (registers the op)
from mmmila.bench.float64_attention import attention_f64_outputs
from mmmila.ops import mila_linear_attention, mila_linear_attention_ref

from .helpers import assert_rel_close, make_inputs

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
# Under the Triton interpreter the kernels are plain Python launched on real tensors: they run
# eagerly, but cannot be traced by AOTAutograd (wrap_triton only captures compiled kernels).
INTERPRETER_CHECKS = ('test_schema', 'test_autograd_registration', 'test_faketensor')


def _op_inputs(batch, hw, nh, dtype=torch.float32, device=DEVICE):
    qk, v, _ = make_inputs(batch, hw, nh, dtype=dtype, device=device)
    return qk.requires_grad_(), v.requires_grad_()


@pytest.mark.parametrize('batch,hw,nh,dtype', [
    (2, (5, 7), 2, torch.float32),
    (1, (3, 4), 1, torch.float64),
    (0, (5, 7), 2, torch.float32),     # empty batch
    (1, (4, 6), 4, torch.bfloat16),
])
def test_opcheck_torch_op(batch, hw, nh, dtype):
    qk, v = _op_inputs(batch, hw, nh, dtype)
    opcheck(torch.ops.mmmila.linear_attention.default, (qk, v, hw[0], hw[1], nh))


def test_opcheck_non_contiguous_inputs():
    """qk and v as the model produces them: v a transposed view, qk a slice of a wider tensor."""
    qk, v = _op_inputs(2, (4, 5), 2)
    wide = torch.cat([qk.detach(), torch.randn(2, 20, 8)], dim=-1)[..., :128].requires_grad_()
    v_t = v.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()
    opcheck(torch.ops.mmmila.linear_attention.default, (wide, v_t, 4, 5, 2))


@pytest.mark.parametrize('batch,hw,nh', [(2, (5, 7), 2), (0, (3, 3), 1)])
def test_opcheck_triton_op(batch, hw, nh):
    from mmmila.kernels import is_interpreted
    qk, v = _op_inputs(batch, hw, nh)
    utils = INTERPRETER_CHECKS if is_interpreted() else None
    kwargs = {} if utils is None else dict(test_utils=utils)
    opcheck(torch.ops.mmmila.linear_attention_triton.default, (qk, v, hw[0], hw[1], nh), **kwargs)


def test_outputs_are_out_s_m():
    """(out, S, m): the attention's result, S = k_r^T v / N and m = mean(k) per head."""
    hw, nh = (4, 9), 2
    qk, v = _op_inputs(1, hw, nh)
    outputs = torch.ops.mmmila.linear_attention(qk, v, hw[0], hw[1], nh)
    assert outputs[1].shape == (1, 2, 32, 32) and outputs[1].dtype == torch.float32
    for name, a, b in zip(('out', 'S', 'm'), outputs, attention_f64_outputs(qk.detach(), v.detach(), hw, nh)):
        assert_rel_close(name, a, b, 1e-5)


def test_gradients_of_all_three_outputs():
    """Gradients flowing into S and m are honoured (gradcheck in float64 on all outputs)."""
    qk, v = _op_inputs(1, (3, 4), 1, torch.float64, 'cpu')
    assert torch.autograd.gradcheck(lambda a, b: torch.ops.mmmila.linear_attention(a, b, 3, 4, 1),
                                    (qk, v))


def test_triton_op_gradients_of_s_and_m_match_torch_op():
    qk, v = _op_inputs(2, (5, 7), 2)
    args = (qk, v, 5, 7, 2)
    tri = torch.ops.mmmila.linear_attention_triton(*args)
    ref = torch.ops.mmmila.linear_attention(*args)
    grads = [torch.randn_like(t) for t in ref]
    for name, a, b in zip(('out', 'S', 'm'), tri, ref):
        assert_rel_close(name, a, b, 1e-4)
    for name, a, b in zip(('dqk', 'dv'), torch.autograd.grad(tri, (qk, v), grads),
                          torch.autograd.grad(ref, (qk, v), grads)):
        assert_rel_close(name, a, b, 1e-4)


def test_fake_does_not_specialise_sizes():
    """make_fx with symbolic shapes: no guard on the batch or token count (no size is read)."""
    qk, v = _op_inputs(2, (5, 7), 2)

    def f(a, b):
        return torch.ops.mmmila.linear_attention(a, b, 5, 7, 2)[0]

    gm = make_fx(f, tracing_mode='symbolic')(qk.detach(), v.detach())
    guards = list(gm.shape_env.guards)
    inputs = [n.meta['val'] for n in gm.graph.nodes if n.op == 'placeholder']
    batch_and_tokens = {inputs[0].shape[0].node.expr, inputs[0].shape[1].node.expr}
    out = [n for n in gm.graph.nodes if n.op == 'output'][0].args[0].meta['val']
    assert {out.shape[0].node.expr, out.shape[1].node.expr} == batch_and_tokens
    touched = [g for g in guards if g.expr.free_symbols & batch_and_tokens]
    assert not touched, f'the fake implementation guarded on B or N: {touched}'


@pytest.mark.parametrize('backend', ['torch', 'triton', 'reference'])
def test_empty_batch(backend):
    """An empty batch gives empty outputs (no division by zero) and empty gradients."""
    qk, v = _op_inputs(0, (5, 7), 2)
    if backend == 'reference':
        out = mila_linear_attention_ref(qk, v, (5, 7), 2)
    else:
        out = mila_linear_attention(qk, v, (5, 7), 2, backend=backend)
    assert out.shape == (0, 35, 64)
    out.sum().backward()
    assert qk.grad.shape == qk.shape and v.grad.shape == v.shape


def test_empty_batch_through_the_backbone():
    from mmmila.models import MILA
    from tests.conftest import TINY_ARCH
    model = MILA(arch=TINY_ARCH, out_indices=(0, 1, 2, 3)).eval()
    with torch.no_grad():
        outs = model(torch.zeros(0, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(0, 32, 16, 16), (0, 64, 8, 8), (0, 128, 4, 4),
                                             (0, 256, 2, 2)]
