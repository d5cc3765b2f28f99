"""The authors' linear-attention chain written out as plain PyTorch ops: the baseline that
``tools/benchmark_attention.py`` measures mmmila's attention op against.

Written from the formulation in docs/model.md on purpose rather than through ``mmmila.ops``: the
baseline uses none of mmmila's code, so that the equality check between them means something.
All functions take qk (B, N, 2C) and v (B, N, C) and return (B, N, C) before LePE.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def authors_angles(hw: tuple[int, int], channels: int, device) -> torch.Tensor:
    """The (H, W, C/2) float32 RoPE angles of the map: row * theta for the first C/4 pairs, col * theta after."""
    height, width = hw
    quarter = channels // 4
    theta = 10000.0 ** (-torch.arange(quarter, dtype=torch.float32, device=device) / quarter)
    rows = torch.arange(height, dtype=torch.float32, device=device)[:, None, None] * theta
    cols = torch.arange(width, dtype=torch.float32, device=device)[None, :, None] * theta
    return torch.cat([rows.expand(height, width, quarter), cols.expand(height, width, quarter)], -1)


def authors_table(hw: tuple[int, int], channels: int, device) -> torch.Tensor:
    """The (H, W, C/2) complex64 rotation table of the authors' classification model."""
    angles = authors_angles(hw, channels, device)
    return torch.polar(torch.ones_like(angles), angles)


def authors_attention(qk, v, hw, num_heads, make_rope):
    """The authors' formulation as separate ops, plain autograd.

    ``make_rope(device)`` is called once per call and returns the rotation, (B, N, C) -> (B, N, C)
    in float32, that q and k share: :func:`complex_rope` (the baseline) or :func:`dense_rope` (the
    dense-prediction variant, which builds its tables there).
    """
    B, N, C = v.shape
    d = C // num_heads
    q = F.elu(qk[..., :C]) + 1.0
    k = F.elu(qk[..., C:]) + 1.0
    rope = make_rope(qk.device)

    def heads(x):
        return x.reshape(B, N, num_heads, d).permute(0, 2, 1, 3)

    q_r, k_r = heads(rope(q)), heads(rope(k))
    q, k, vh = heads(q), heads(k), heads(v)
    z = 1 / (q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)
    kv = (k_r.transpose(-2, -1) * (N ** -0.5)) @ (vh * (N ** -0.5))
    out = q_r @ kv * z
    return out.transpose(1, 2).reshape(B, N, C)


def complex_rope(table: torch.Tensor):
    """RoPE of the classification model: complex multiplication by a table made once per shape."""
    height, width, pairs = table.shape

    def rope(x):
        xc = torch.view_as_complex(x.float().reshape(x.shape[0], height, width, pairs, 2))
        return torch.view_as_real(xc * table).reshape(x.shape)
    return lambda device: rope


def dense_rope(hw: tuple[int, int], channels: int):
    """RoPE as the authors' dense-prediction backbone does it: the angles of the current map
    computed for every input (once per call, shared by q and k), float32 cos/sin tables, real
    arithmetic on the pairs."""
    def make_rope(device):
        angles = authors_angles(hw, channels, device)   # per input: the map size varies
        cos, sin = angles.cos(), angles.sin()

        def rope(x):
            pairs = x.float().reshape(x.shape[0], hw[0], hw[1], channels // 2, 2)
            re, im = pairs[..., 0], pairs[..., 1]
            return torch.stack([re * cos - im * sin, re * sin + im * cos], dim=-1).reshape(x.shape)
        return rope
    return make_rope
