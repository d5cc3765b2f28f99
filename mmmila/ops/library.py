"""MILA's linear attention as registered PyTorch operators (``torch.library``).

``torch.ops.mmmila.linear_attention(qk, v, H, W, num_heads) -> (out, S, m)`` is the PyTorch
implementation (the memory-lean chunked path of :mod:`mmmila.ops.cpu_fused`; it runs on any
device; on CPU, when mmmila's compiled kernels are built, its feature map elu + 1 is one compiled
pass, :mod:`mmmila.ops.cpu_kernels`). ``out`` (B, N, C) is the attention's result;
``S = k_r^T v / N`` (B, nh, d, d) and ``m = mean(k)`` (B, nh, d) are the per-head sums that the
backward needs: autograd saves them with the inputs and recomputes everything else
(``torch.ops.mmmila.linear_attention_backward``).
Gradients flowing into S and m are honoured, so the op is differentiable in all three outputs.

The Triton kernels register ``torch.ops.mmmila.linear_attention_triton`` with the same schema
(plus ``num_chunks``) when ``mmmila.kernels`` is imported (a ``torch.library.triton_op``, so that
inductor sees the kernels). Both ops share the fake implementation and the autograd wiring below.

The fake implementation only allocates: it never reads a size, so H, W, B and N stay symbolic
under ``torch.compile(dynamic=True)`` / ``torch.export`` with dynamic dimensions; the real
implementations are opaque to the tracers.
"""
from __future__ import annotations

from typing import Callable

import torch

from . import cpu_kernels
from .cpu_fused import attention_backward, attention_forward, sums_dtype
from .checks import check_attention_inputs
from .registration import define_device_impl, define_op, mark_backward_op, register_autograd


def attention_fake(qk: torch.Tensor, v: torch.Tensor, height: int, width: int,
                   num_heads: int, *_) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Empty (out, S, m) with the shapes and dtypes of the real implementations."""
    B, N, C = v.shape
    d = C // num_heads
    cdt = sums_dtype(qk.dtype, v.dtype)
    return (v.new_empty((B, N, C)), qk.new_empty((B, num_heads, d, d), dtype=cdt),
            qk.new_empty((B, num_heads, d), dtype=cdt))


def attention_backward_fake(grad_out, grad_s, grad_m, qk: torch.Tensor, v: torch.Tensor,
                            *_) -> tuple[torch.Tensor, torch.Tensor]:
    """Empty (dL/dqk, dL/dv), contiguous, in the dtypes of qk and v."""
    return qk.new_empty(qk.shape), v.new_empty(v.shape)


def register_attention_autograd(op, backward_op: Callable) -> None:
    """Autograd of an attention op (out, S, m) = op(qk, v, H, W, num_heads, *extra).

    Saves qk, v, S and m and the non-tensor arguments; the backward is ``backward_op(dout, dS,
    dm, qk, v, S, m, H, W, num_heads, *extra) -> (dqk, dv)``. A second derivative is not defined.
    """
    def setup_context(ctx, inputs, output):
        qk, v, *args = inputs
        _, s, m = output
        ctx.save_for_backward(qk, v, s, m)
        ctx.args = args
        ctx.set_materialize_grads(False)   # outputs without a gradient come as None, not zeros to add

    def backward(ctx, grad_out, grad_s, grad_m):
        qk, v, s, m = ctx.saved_tensors
        if grad_out is None:
            grad_out = torch.zeros(v.shape, dtype=v.dtype, device=v.device)
        dqk, dv = backward_op(grad_out, grad_s, grad_m, qk, v, s, m, *ctx.args)
        return (dqk if ctx.needs_input_grad[0] else None,
                dv if ctx.needs_input_grad[1] else None) + (None,) * len(ctx.args)

    register_autograd(op, backward, setup_context)
    mark_backward_op(backward_op)


@define_op('mmmila::linear_attention')
def linear_attention(qk: torch.Tensor, v: torch.Tensor, height: int, width: int,
                     num_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out, S, m) of MILA's linear attention, chunked PyTorch ops; inputs checked by the caller."""
    return attention_forward(qk, v, (height, width), num_heads)


@define_op('mmmila::linear_attention_backward')
def linear_attention_backward(grad_out: torch.Tensor, grad_s: torch.Tensor | None,
                              grad_m: torch.Tensor | None, qk: torch.Tensor, v: torch.Tensor,
                              s: torch.Tensor, m: torch.Tensor, height: int, width: int,
                              num_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(dL/dqk, dL/dv) of :func:`linear_attention`."""
    return attention_backward(grad_out, grad_s, grad_m, qk, v, s, m, (height, width), num_heads)


torch.library.register_fake(linear_attention, attention_fake)
torch.library.register_fake(linear_attention_backward, attention_backward_fake)
register_attention_autograd(linear_attention, linear_attention_backward)

if cpu_kernels.AVAILABLE:   # on CPU the feature map by the compiled kernel (:mod:`.cpu_kernels`)
    @define_device_impl(linear_attention, 'CPU')
    def linear_attention_on_cpu(qk, v, height, width, num_heads):
        """:func:`linear_attention` on CPU tensors, its feature map by the compiled kernel."""
        return attention_forward(qk, v, (height, width), num_heads, compiled=True)

    @define_device_impl(linear_attention_backward, 'CPU')
    def linear_attention_backward_on_cpu(grad_out, grad_s, grad_m, qk, v, s, m, height, width, num_heads):
        """:func:`linear_attention_backward` on CPU tensors, as :func:`linear_attention_on_cpu`."""
        return attention_backward(grad_out, grad_s, grad_m, qk, v, s, m, (height, width), num_heads,
                                  compiled=True)


def mila_linear_attention_cpu(qk: torch.Tensor, v: torch.Tensor, hw: tuple[int, int],
                              num_heads: int) -> torch.Tensor:
    """MILA's linear attention before LePE, memory-lean PyTorch path (any device).

    Computes in float32 (float64 for float64 inputs, so that it can be gradchecked), whatever
    the input dtype, and returns v's dtype.

    Args:
        qk (Tensor): (B, N, 2C), output of the ``qk`` projection.
        v (Tensor): (B, N, C), the attention's input.
        hw (tuple[int, int]): (H, W), H * W = N, tokens in row-major order.
        num_heads (int): nh; C / nh must be even and C divisible by 4.

    Returns:
        Tensor: (B, N, C) in v's dtype.
    """
    check_attention_inputs(qk, v, hw, num_heads)
    return torch.ops.mmmila.linear_attention(qk, v, hw[0], hw[1], num_heads)[0]
