"""MILA's linear attention in float64 autograd: the one ground truth of the op's tests and of the GPU kit.

Written from docs/kernel_math.md on purpose rather than through ``mmmila.ops``: it uses none of the
implementations it judges (not even their RoPE tables), so an error they share cannot hide. Every
test and tool that needs the attention's exact value takes it from here; none keeps its own copy.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def attention_f64_outputs(qk: torch.Tensor, v: torch.Tensor, hw: tuple[int, int],
                          num_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out, S, m) of MILA's attention (before LePE) in float64 autograd, from float64 copies of
    ``qk`` and ``v``: the three outputs of the registered ops ``torch.ops.mmmila.linear_attention*``.

    The angles are formed in float32 from integer positions (the spec's rule, so that float32
    implementations can be compared at round-off level), everything after that in float64.

    Args:
        qk (Tensor): (B, N, 2C).
        v (Tensor): (B, N, C).
        hw (tuple[int, int]): (H, W), H * W = N, tokens in row-major order.
        num_heads (int): nh.

    Returns:
        tuple[Tensor, Tensor, Tensor]: out (B, N, C), S = k_r^T v / N (B, nh, d, d) and
        m = mean(k) (B, nh, d), all float64.
    """
    qk, v = qk.double(), v.double()
    B, N, C = v.shape
    d = C // num_heads
    quarter = C // 4
    theta = 10000.0 ** (-torch.arange(quarter, dtype=torch.float32) / quarter)
    pos = torch.arange(N)
    rows, cols = (pos // hw[1]).float(), (pos % hw[1]).float()
    angle = torch.cat([rows[:, None] * theta, cols[:, None] * theta], dim=1).double()
    cos, sin = angle.cos().to(qk.device), angle.sin().to(qk.device)

    def rotate(x):
        re, im = x[..., 0::2], x[..., 1::2]
        return torch.stack([re * cos - im * sin, re * sin + im * cos], dim=-1).flatten(-2)

    q, k = F.elu(qk[..., :C]) + 1, F.elu(qk[..., C:]) + 1
    q_r, k_r = rotate(q).view(B, N, num_heads, d), rotate(k).view(B, N, num_heads, d)
    q, k, vh = q.view(B, N, num_heads, d), k.view(B, N, num_heads, d), v.view(B, N, num_heads, d)
    m = k.sum(dim=1) / N
    z = 1.0 / ((q * m[:, None]).sum(-1) + 1e-6)
    s = torch.einsum('bnhd,bnhe->bhde', k_r, vh) / N
    out = (torch.einsum('bnhd,bhde->bnhe', q_r, s) * z[..., None]).reshape(B, N, C)
    return out, s, m


def attention_f64(qk: torch.Tensor, v: torch.Tensor, hw: tuple[int, int], num_heads: int) -> torch.Tensor:
    """MILA's attention (before LePE), (B, N, C) in float64: the ``out`` of :func:`attention_f64_outputs`."""
    return attention_f64_outputs(qk, v, hw, num_heads)[0]
