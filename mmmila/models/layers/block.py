"""MILA block: conditional positional encodings, gated linear attention, MLP."""
from __future__ import annotations

import torch
import torch.nn as nn

from .attention import MILAAttention, dwconv_tokens
from .mlp import DropPath, Mlp


def _dwconv(channels: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, padding=1, groups=channels)


class MILABlock(nn.Module):
    """One MILA block on tokens (B, N, C) with an explicit map size ``hw``.

    ``x += cpe1(x)``; ``x += drop_path(out_proj(attn(silu(dwc(in_proj(n))))) * silu(act_proj(n)))``
    with ``n = norm1(x)``; ``x += cpe2(x)``; ``x += drop_path(mlp(norm2(x)))``.

    Args:
        channels (int): C.
        num_heads (int): attention heads.
        mlp_ratio (float): MLP hidden width / C. Defaults to 4.
        qk_bias (bool): bias of the ``qk`` projection. Defaults to True.
        drop_path (float): stochastic depth rate of this block. Defaults to 0.
        attn_backend (str): 'auto' | 'torch' | 'triton'. Defaults to 'auto'.
    """

    def __init__(self, channels: int, num_heads: int, mlp_ratio: float = 4.0, qk_bias: bool = True,
                 drop_path: float = 0.0, attn_backend: str = 'auto') -> None:
        super().__init__()
        self.cpe1 = _dwconv(channels)
        self.norm1 = nn.LayerNorm(channels)
        self.in_proj = nn.Linear(channels, channels)
        self.act_proj = nn.Linear(channels, channels)
        self.dwc = _dwconv(channels)
        self.act = nn.SiLU()
        self.attn = MILAAttention(channels, num_heads, qk_bias=qk_bias, backend=attn_backend)
        self.out_proj = nn.Linear(channels, channels)
        self.drop_path = DropPath(drop_path)
        self.cpe2 = _dwconv(channels)
        self.norm2 = nn.LayerNorm(channels)
        self.mlp = Mlp(channels, int(channels * mlp_ratio))

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = x + dwconv_tokens(self.cpe1, x, hw)
        y = self.norm1(x)
        gate = self.act(self.act_proj(y))
        y = self.act(dwconv_tokens(self.dwc, self.in_proj(y), hw))
        y = self.attn(y, hw)
        x = x + self.drop_path(self.out_proj(y * gate))
        x = x + dwconv_tokens(self.cpe2, x, hw)
        return x + self.drop_path(self.mlp(self.norm2(x)))
