"""The registered op around the Triton kernels, and the public :func:`mila_linear_attention_triton`.

``torch.ops.mmmila.linear_attention_triton(qk, v, H, W, num_heads, num_chunks=None) -> (out, S, m)``
is a ``torch.library.triton_op`` whose kernels are launched through ``wrap_triton``, so that
``torch.compile`` (inductor) sees the kernels themselves; its backward is the triton_op
``torch.ops.mmmila.linear_attention_triton_backward``. Fake implementation and autograd wiring are
those of the PyTorch op (:mod:`mmmila.ops.library`): the same contract, saving qk, v, S and m.
"""
from __future__ import annotations

import torch
from torch.library import triton_op

from mmmila.ops.checks import check_attention_inputs
from mmmila.ops.library import attention_backward_fake, attention_fake, register_attention_autograd

from . import linear_attn_fwd
from .common import device_ctx
from .heuristics import SUPPORTED_DTYPES, SUPPORTED_HEAD_DIMS
from .linear_attn_bwd import mila_attn_bwd
from .linear_attn_fwd import mila_attn_fwd
from .tuning import config_for


def is_interpreted() -> bool:
    """Whether the kernels were built for the Triton interpreter (TRITON_INTERPRET=1 at import).

    Triton fixes this when it is first imported (its own ``tl`` helpers are ``@triton.jit``
    functions too) and when ``@triton.jit`` runs on our kernels; setting the variable later has no
    effect in the same process.
    """
    return type(linear_attn_fwd._mila_attn_fwd_map_kernel).__name__ == 'InterpretedFunction'


def input_problem(qk: torch.Tensor, v: torch.Tensor, num_heads: int) -> str | None:
    """Why the kernels cannot take these inputs (head dim, dtypes), or None when they can.

    The inputs are checked ones (:func:`mmmila.ops.checks.check_attention_inputs`); this says only
    what the kernels were not built for.

    Args:
        qk (Tensor): (B, N, 2C).
        v (Tensor): (B, N, C).
        num_heads (int): nh.

    Returns:
        str | None: a readable reason, or None.
    """
    C = v.shape[-1]
    d = C // num_heads
    if d not in SUPPORTED_HEAD_DIMS:
        return (f'the Triton kernels need a head dim in {SUPPORTED_HEAD_DIMS} (that of MILA), '
                f'got C / num_heads = {C} / {num_heads} = {d}')
    return dtype_problem({'qk': qk, 'v': v})


def dtype_problem(named: dict) -> str | None:
    """The first of the named tensors whose dtype the kernels do not take, said, or None."""
    for name, t in named.items():
        if t.dtype not in SUPPORTED_DTYPES:
            return f'{name} has dtype {t.dtype}; the Triton kernels take float32, float16 or bfloat16'
    return None


def device_problem(device: torch.device) -> str | None:
    """Why the kernels cannot run on ``device`` now, or None when they can."""
    if device.type == 'cuda' or (device.type == 'cpu' and is_interpreted()):
        return None
    if device.type == 'cpu':
        return ('Triton kernels on CPU tensors need the Triton interpreter: set TRITON_INTERPRET=1 '
                'before triton is first imported in the process (or use a CUDA device)')
    return f'the Triton kernels run on CUDA devices (or CPU under TRITON_INTERPRET=1), not {device}'


@triton_op('mmmila::linear_attention_triton', mutates_args=())
def linear_attention_triton(qk: torch.Tensor, v: torch.Tensor, height: int, width: int,
                            num_heads: int, num_chunks: int | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out, S, m) by the fused kernels; inputs are checked by the caller."""
    B, N, C = v.shape
    if B == 0 or N == 0:   # nothing to launch; S and m of an empty map are 0
        out, s, m = attention_fake(qk, v, height, width, num_heads)
        return out, s.zero_(), m.zero_()
    hw = (height, width)
    with device_ctx(qk):
        cfg = config_for('fwd', qk, v, num_heads, num_chunks,
                         run=lambda c: mila_attn_fwd(qk, v, hw, num_heads, c))
        return mila_attn_fwd(qk, v, hw, num_heads, cfg)


@triton_op('mmmila::linear_attention_triton_backward', mutates_args=())
def linear_attention_triton_backward(grad_out: torch.Tensor, grad_s: torch.Tensor | None,
                                     grad_m: torch.Tensor | None, qk: torch.Tensor, v: torch.Tensor,
                                     s: torch.Tensor, m: torch.Tensor, height: int, width: int,
                                     num_heads: int, num_chunks: int | None = None
                                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(dL/dqk, dL/dv) of :func:`linear_attention_triton`."""
    B, N, _ = v.shape
    if B == 0 or N == 0:
        return attention_backward_fake(grad_out, grad_s, grad_m, qk, v)
    hw = (height, width)
    with device_ctx(qk):
        cfg = config_for('bwd', qk, v, num_heads, num_chunks,
                         run=lambda c: mila_attn_bwd(grad_out, qk, v, s, m, hw, num_heads, c, grad_s, grad_m))
        return mila_attn_bwd(grad_out, qk, v, s, m, hw, num_heads, cfg, grad_s, grad_m)


# Shape propagation by allocation only (triton_op's default traces the launcher, whose launch
# configuration reads the sizes and would specialise them).
linear_attention_triton.register_fake(attention_fake)
linear_attention_triton_backward.register_fake(attention_backward_fake)
register_attention_autograd(linear_attention_triton, linear_attention_triton_backward)


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
        ValueError: if the inputs are malformed (:func:`mmmila.ops.checks.check_attention_inputs`)
            or not supported by the kernels.
        RuntimeError: if the kernels cannot run on the tensors' device in this process.
    """
    check_attention_inputs(qk, v, hw, num_heads)
    reason = input_problem(qk, v, num_heads)
    if reason is not None:
        raise ValueError(f'mila_linear_attention_triton: {reason}')
    reason = device_problem(qk.device)
    if reason is not None:
        raise RuntimeError(f'mila_linear_attention_triton: {reason}')
    return torch.ops.mmmila.linear_attention_triton(qk, v, hw[0], hw[1], num_heads, num_chunks)[0]
