"""Pure-PyTorch reference of MILA's linear attention: the maths in plain autograd ops.

It runs while ``torch.jit`` traces and ``torch.onnx`` exports (:mod:`mmmila.ops.dispatch`), and the
16-bit tests compare a path with it run in the same dtype. The ground truth that every path, this
one included, is tested against is the float64 oracle :mod:`mmmila.bench.float64_attention`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .checks import check_attention_inputs
from .rope2d import apply_rope2d, rope2d_cos_sin

EPS = 1e-6


def mila_linear_attention_ref(qk: torch.Tensor, v: torch.Tensor, hw: tuple[int, int],
                              num_heads: int) -> torch.Tensor:
    """MILA's linear attention before LePE, by plain autograd ops, in float32.

    ``q, k = elu(qk) + 1`` (first / last C channels), 2-D RoPE over the whole C channels, heads
    cut after the rotation; per head ``z = 1 / (q . mean(k) + 1e-6)`` from the un-rotated q, k,
    ``S = k_r^T v / N`` and ``out = (q_r S) * z``.

    Args:
        qk (Tensor): (B, N, 2C), output of the ``qk`` projection.
        v (Tensor): (B, N, C), the attention's input (MILA has no v projection).
        hw (tuple[int, int]): map size (H, W), H * W = N, tokens in row-major order.
        num_heads (int): nh; C / nh must be even.

    Returns:
        Tensor: (B, N, C) in the dtype of ``v``.
    """
    B, N, C, d = check_attention_inputs(qk, v, hw, num_heads)
    # RoPE and the normaliser in float32 (the authors' code does too); under fp16 the token
    # sums would overflow at detection resolution.
    q = F.elu(qk[..., :C].float()) + 1
    k = F.elu(qk[..., C:].float()) + 1
    cos, sin = rope2d_cos_sin(hw[0], hw[1], C, qk.device)
    q_r = apply_rope2d(q, cos, sin).view(B, N, num_heads, d)
    k_r = apply_rope2d(k, cos, sin).view(B, N, num_heads, d)
    q = q.view(B, N, num_heads, d)
    m = k.view(B, N, num_heads, d).mean(dim=1)                     # (B, nh, d)
    z = 1.0 / (torch.einsum('bnhd,bhd->bnh', q, m) + EPS)          # (B, N, nh)
    s = torch.einsum('bnhd,bnhe->bhde', k_r, v.float().view(B, N, num_heads, d)) / N
    out = torch.einsum('bnhd,bhde->bnhe', q_r, s) * z.unsqueeze(-1)
    return out.reshape(B, N, C).to(v.dtype)
