"""The one check of the attention's inputs, shared by every path.

:func:`check_attention_inputs` is called by each entry point (:func:`mmmila.ops.mila_linear_attention`
before it chooses a backend, and the per-path functions ``mila_linear_attention_ref``,
``mila_linear_attention_cpu`` and ``mmmila.kernels.mila_linear_attention_triton``). The registered
ops (``torch.ops.mmmila.*``) and the implementations behind them take checked inputs. What only
the Triton kernels cannot take (a head dim or dtype they were not built for) is theirs to say
(``mmmila.kernels.input_problem``).
"""
from __future__ import annotations

import torch


def check_head_layout(channels: int, num_heads: int) -> int:
    """The head layout MILA's attention needs: ``num_heads`` dividing ``channels`` into an even head
    dim, and ``channels`` divisible by 4 (2-D RoPE). Returns the head dim; raises a ValueError naming
    the rule that is broken. The one home of these rules: the op's input check, the model's and the
    attention module's arguments and the FLOP count ask it."""
    C = channels
    if num_heads < 1 or C % num_heads:
        raise ValueError(f'channels C={C} are not divisible by num_heads={num_heads}')
    d = C // num_heads
    if d % 2:
        raise ValueError(f'head dim C / num_heads = {C} / {num_heads} = {d} must be even (RoPE rotates '
                         'channel pairs)')
    if C % 4:
        raise ValueError(f'channels C={C} must be divisible by 4 (2-D RoPE rotates C/4 channel pairs by '
                         'the row and C/4 by the column)')
    return d


def check_attention_inputs(qk: torch.Tensor, v: torch.Tensor, hw: tuple[int, int],
                           num_heads: int) -> tuple[int, int, int, int]:
    """Check the inputs of MILA's linear attention and return (B, N, C, d).

    Args:
        qk (Tensor): (B, N, 2C), floating point.
        v (Tensor): (B, N, C), floating point, on qk's device.
        hw (tuple[int, int]): (H, W) with H * W = N.
        num_heads (int): nh, dividing C, with an even head dim d = C / nh; C must be divisible
            by 4 (2-D RoPE rotates C/4 channel pairs by the row and C/4 by the column).

    Returns:
        tuple[int, int, int, int]: B, N, C and the head dim d.

    Raises:
        TypeError: if qk or v is not a tensor.
        ValueError: naming the first thing that is wrong.
    """
    for name, t in (('qk', qk), ('v', v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f'{name} must be a tensor, got {type(t).__name__}')
    if v.dim() != 3:
        raise ValueError(f'v must be (B, N, C), got shape {tuple(v.shape)}')
    B, N, C = v.shape
    if qk.shape != (B, N, 2 * C):
        raise ValueError(f'qk must be (B, N, 2C) = {(B, N, 2 * C)} for v of shape {tuple(v.shape)}, '
                         f'got {tuple(qk.shape)}')
    for name, t in (('qk', qk), ('v', v)):
        if not t.is_floating_point():
            raise ValueError(f'{name} must be a floating-point tensor, got dtype {t.dtype}')
    if qk.device != v.device:
        raise ValueError(f'qk is on {qk.device} but v is on {v.device}')
    if len(hw) != 2:
        raise ValueError(f'hw must be the map size (H, W), got {tuple(hw)}')
    H, W = hw
    if H * W != N:
        raise ValueError(f'map size H x W = {H} x {W} does not match N={N} tokens')
    return B, N, C, check_head_layout(C, num_heads)
