"""MILA block: conditional positional encodings, gated linear attention, MLP."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import MILAAttention
from .conv import dwconv_tokens
from .functional import gated_linear, norm_linears
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
        # Residual adds go in place into fresh outputs of convolutions and linear layers (which
        # do not keep their outputs for backward), never into a tensor autograd has saved.
        x = dwconv_tokens(self.cpe1, x, hw, residual=x)
        gate_in, y = norm_linears(x, self.norm1, [self.act_proj, self.in_proj])
        y = dwconv_tokens(self.dwc, y, hw)
        y = F.silu(y, inplace=not (torch.is_grad_enabled() and y.requires_grad))   # self.act
        y = self.attn(y, hw)
        # x + out_proj(y * silu(gate_in)), keeping only y and gate_in for backward
        x = self._residual(x, lambda res: gated_linear(y, gate_in, self.out_proj.weight,
                                                       self.out_proj.bias, residual=res, inplace=True))
        x = dwconv_tokens(self.cpe2, x, hw, residual=x)
        hidden, = norm_linears(x, self.norm2, [self.mlp.fc1])
        return self._residual(x, lambda res: self.mlp.forward_hidden(hidden, residual=res))

    def _residual(self, x: torch.Tensor, branch) -> torch.Tensor:
        """``x + drop_path(branch())``; ``branch(residual)`` adds ``x`` itself when no path is dropped."""
        if self.drop_path.drop_prob > 0 and self.drop_path.training:
            return x + self.drop_path(branch(None))
        return branch(x)
