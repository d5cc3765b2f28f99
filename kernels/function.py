"""The autograd Function around the Triton kernels, and the public :func:`mila_linear_attention_triton`."""
from __future__ import annotations

import contextlib

import torch
from torch.autograd.function import once_differentiable

from . import linear_attn_fwd
from .heuristics import SUPPORTED_DTYPES, SUPPORTED_HEAD_DIMS, launch_config
from .linear_attn_bwd import mila_attn_bwd
from .linear_attn_fwd import mila_attn_fwd


def is_interpreted() -> bool:
    """Whether the kernels were built for the Triton interpreter (TRITON_INTERPRET=1 at import).

    Triton fixes this when it is first imported (its own ``tl`` helpers are ``@triton.jit``
    functions too) and when ``@triton.jit`` runs on our kernels; setting the variable later has no
    effect in the same process.
    """
    return type(linear_attn_fwd._mila_attn_fwd_map_kernel).__name__ == 'InterpretedFunction'


def input_problem(qk: torch.Tensor, v: torch.Tensor, hw: tuple[int, int],
                       num_heads: int) -> str | None:
    """Why the kernels cannot take these inputs (shapes, dtypes, head dim), or None when they can.

    Args:
        qk (Tensor): (B, N, 2C).
        v (Tensor): (B, N, C).
        hw (tuple[int, int]): (H, W).
        num_heads (int): nh.

    Returns:
        str | None: a readable reason, or None.
    """
    if qk.dim() != 3 or v.dim() != 3:
        return f'qk and v must be (B, N, 2C) and (B, N, C), got {tuple(qk.shape)} and {tuple(v.shape)}'
    B, N, C = v.shape
    if tuple(qk.shape) != (B, N, 2 * C):
        return (f'qk must be (B, N, 2C) = {(B, N, 2 * C)} for v of shape {tuple(v.shape)}, '
                f'got {tuple(qk.shape)}')
    if len(hw) != 2 or hw[0] * hw[1] != N:
        return f'map size {tuple(hw)} does not match N={N} tokens'
    if num_heads < 1 or C % num_heads:
        return f'channels C={C} are not divisible by num_heads={num_heads}'
    d = C // num_heads
    if d not in SUPPORTED_HEAD_DIMS:
        return (f'the Triton kernels need a head dim in {SUPPORTED_HEAD_DIMS} (that of MILA), '
                f'got C / num_heads = {C} / {num_heads} = {d}')
    for name, t in (('qk', qk), ('v', v)):
        if t.dtype not in SUPPORTED_DTYPES:
            return f'{name} has dtype {t.dtype}; the Triton kernels take float32, float16 or bfloat16'
    if qk.device != v.device:
        return f'qk is on {qk.device} but v is on {v.device}'
    return None


def device_problem(device: torch.device) -> str | None:
    """Why the kernels cannot run on ``device`` now, or None when they can."""
    if device.type == 'cuda' or (device.type == 'cpu' and is_interpreted()):
        return None
    if device.type == 'cpu':
        return ('Triton kernels on CPU tensors need the Triton interpreter: set TRITON_INTERPRET=1 '
                'before triton is first imported in the process (or use a CUDA device)')
    return f'the Triton kernels run on CUDA devices (or CPU under TRITON_INTERPRET=1), not {device}'


def _device_ctx(t: torch.Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


class MILALinearAttnFn(torch.autograd.Function):
    """Fused MILA linear attention; saves only qk, v and the per-head S (d x d) and m (d)."""

    @staticmethod
    def forward(ctx, qk: torch.Tensor, v: torch.Tensor, hw: tuple[int, int], num_heads: int,
                num_chunks: int | None = None) -> torch.Tensor:
        B, N, C = v.shape
        cfg = launch_config(N, B * num_heads, C // num_heads, qk.dtype, qk.device, num_chunks)
        with _device_ctx(qk):
            out, s, m = mila_attn_fwd(qk, v, hw, num_heads, cfg)
        ctx.save_for_backward(qk, v, s, m)
        ctx.hw, ctx.num_heads, ctx.cfg = hw, num_heads, cfg
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        qk, v, s, m = ctx.saved_tensors
        with _device_ctx(qk):
            dqk, dv = mila_attn_bwd(grad_out, qk, v, s, m, ctx.hw, ctx.num_heads, ctx.cfg)
        return (dqk if ctx.needs_input_grad[0] else None,
                dv if ctx.needs_input_grad[1] else None, None, None, None)


def mila_linear_attention_triton(qk: torch.Tensor, v: torch.Tensor, hw: tuple[int, int],
                                 num_heads: int, num_chunks: int | None = None) -> torch.Tensor:
    """MILA's linear attention before LePE with the fused Triton kernels (forward and backward).

    Same maths and signature as ``mmmila.ops.mila_linear_attention_ref``: elu+1 feature map,
    2-D RoPE over the whole C channels (heads cut after the rotation), per head
    ``z = 1 / (q . mean(k) + 1e-6)`` from the un-rotated q, k, ``S = k_r^T v / N``,
    ``out = z * (q_r S)``. Sums are accumulated in float32 whatever the input dtype.

    Args:
        qk (Tensor): (B, N, 2C), output of the ``qk`` projection; float32, float16 or bfloat16.
        v (Tensor): (B, N, C), the attention's input.
        hw (tuple[int, int]): (H, W) with H * W = N, tokens in row-major order.
        num_heads (int): nh, with C / nh = 32.
        num_chunks (int, optional): reduction chunks per (batch, head); default by device.

    Returns:
        Tensor: (B, N, C) in v's dtype.

    Raises:
        ValueError: if the inputs are malformed or not supported by the kernels.
        RuntimeError: if the kernels cannot run on the tensors' device in this process.
    """
    reason = input_problem(qk, v, hw, num_heads)
    if reason is not None:
        raise ValueError(f'mila_linear_attention_triton: {reason}')
    reason = device_problem(qk.device)
    if reason is not None:
        raise RuntimeError(f'mila_linear_attention_triton: {reason}')
    return MILALinearAttnFn.apply(qk, v, (int(hw[0]), int(hw[1])), int(num_heads), num_chunks)
