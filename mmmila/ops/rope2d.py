"""2-D rotary position embedding of MILA, computed for the current map size.

Channel pairs (2i, 2i+1) of the whole C channels are rotated: pair i < C/4 by ``row * theta_i``,
pair i >= C/4 by ``col * theta_(i - C/4)``, with ``theta_j = base ** (-j / (C/4))``.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from .capture import capturing_graph


def rope2d_theta(channels: int, device: torch.device, base: float = 10000.0) -> torch.Tensor:
    """Frequencies theta_j = base ** (-j / (C/4)), j < C/4, float32 (C/4,): shared by every path."""
    quarter = channels // 4
    return base ** (-torch.arange(quarter, dtype=torch.float32, device=device) / quarter)


def rope2d_cos_sin(height: int, width: int, channels: int, device: torch.device,
                   base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cos and sin of the rotation angles, float32; eager calls are cached per (H, W, C, device).

    While a graph is captured (:func:`capturing_graph`, e.g. H and W symbolic under dynamic
    shapes) the tables are built from ops instead, so that they follow the traced sizes.

    Args:
        height (int): map height H (an int, or a SymInt while tracing).
        width (int): map width W.
        channels (int): C, a multiple of 4.
        device (torch.device): where the tables live.
        base (float): RoPE base. Defaults to 10000.

    Returns:
        tuple[Tensor, Tensor]: cos and sin, each (H*W, C/2), float32.
    """
    if channels % 4:
        raise ValueError(f'2-D RoPE needs channels divisible by 4, got {channels}')
    if capturing_graph() or isinstance(height, torch.SymInt) or isinstance(width, torch.SymInt):
        return rope2d_tables(height, width, channels, device, base)
    return _cached_tables(int(height), int(width), channels, torch.device(device), base)


def rope2d_tables(height: int, width: int, channels: int, device: torch.device,
                  base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`rope2d_cos_sin` without the cache (traceable with symbolic H and W)."""
    k = channels // 4
    # Angles in float32 from integer positions (never accumulated), so large maps stay exact.
    theta = rope2d_theta(channels, device, base)
    rows = torch.arange(height, dtype=torch.float32, device=device)
    cols = torch.arange(width, dtype=torch.float32, device=device)
    ang_r = (rows[:, None] * theta[None]).unsqueeze(1).expand(height, width, k)
    ang_c = (cols[:, None] * theta[None]).unsqueeze(0).expand(height, width, k)
    angles = torch.cat([ang_r, ang_c], dim=-1).reshape(height * width, 2 * k)
    return angles.cos(), angles.sin()


_cached_tables = lru_cache(maxsize=32)(rope2d_tables)


def apply_rope2d(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of ``x``.

    Args:
        x (Tensor): (B, N, C).
        cos (Tensor): (N, C/2).
        sin (Tensor): (N, C/2); pass ``-sin`` for the inverse rotation.

    Returns:
        Tensor: (B, N, C), in the promoted dtype of ``x`` and the tables.
    """
    x = x.unflatten(-1, (-1, 2))
    re, im = x[..., 0], x[..., 1]
    return torch.stack([re * cos - im * sin, re * sin + im * cos], dim=-1).flatten(-2)
