"""MILA block: conditional positional encodings, gated linear attention, MLP."""
from __future__ import annotations

import torch
import torch.nn as nn

from mmmila.ops import dwconv_tokens, norm_linears

from .attention import MILAAttention
from .mlp import DropPath, Mlp


def _dwconv(channels: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, padding=1, groups=channels)


class MILABlock(nn.Module):
    """One MILA block on tokens (B, N, C) with an explicit map size ``hw``::

        x = x + cpe1(x)
        n = norm1(x)
        x = x + drop_path(out_proj(attn(silu(dwc(in_proj(n)))) * silu(act_proj(n))))
        x = x + cpe2(x)
        x = x + drop_path(mlp(norm2(x)))

    ``cpe1``, ``dwc``, ``cpe2`` and LePE inside ``attn`` are depthwise 3x3 convolutions on the
    tokens read as an (H, W) map; each runs with what follows it (the residual, SiLU, the attention's
    output and the gate) as one op, :func:`mmmila.ops.dwconv_tokens`. Each LayerNorm runs with the
    linear layers that read it (:func:`mmmila.ops.norm_linears`) and the MLP's GELU with ``fc2``
    (:func:`mmmila.ops.gelu_linear`): ops that keep their input, not the norm's or GELU's output, for
    backward.

    Args:
        channels (int): C.
        num_heads (int): attention heads.
        mlp_ratio (float): MLP hidden width / C. Defaults to 4.
        qk_bias (bool): bias of the ``qk`` projection. Defaults to True.
        drop_path (float): stochastic depth rate of this block. Defaults to 0.
        attn_backend (str): backend of the block's ops (attention, depthwise convolutions and
            matrix-product chains), 'auto' | 'torch' | 'triton'. Defaults to 'auto'.
    """

    def __init__(self, channels: int, num_heads: int, mlp_ratio: float = 4.0, qk_bias: bool = True,
                 drop_path: float = 0.0, attn_backend: str = 'auto') -> None:
        super().__init__()
        self.backend = attn_backend
        self.cpe1 = _dwconv(channels)
        self.norm1 = nn.LayerNorm(channels)
        self.in_proj = nn.Linear(channels, channels)
        self.act_proj = nn.Linear(channels, channels)
        self.dwc = _dwconv(channels)
        self.attn = MILAAttention(channels, num_heads, qk_bias=qk_bias, backend=attn_backend)
        self.out_proj = nn.Linear(channels, channels)
        self.drop_path = DropPath(drop_path)
        self.cpe2 = _dwconv(channels)
        self.norm2 = nn.LayerNorm(channels)
        self.mlp = Mlp(channels, int(channels * mlp_ratio), backend=attn_backend)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = dwconv_tokens(x, self.cpe1.weight, self.cpe1.bias, hw, skip=True, backend=self.backend)
        gate, y = norm_linears(x, self.norm1, (self.act_proj, self.in_proj), backend=self.backend)
        y = dwconv_tokens(y, self.dwc.weight, self.dwc.bias, hw, act='silu', backend=self.backend)
        x = x + self.drop_path(self.out_proj(self.attn(y, hw, gate=gate)))
        x = dwconv_tokens(x, self.cpe2.weight, self.cpe2.bias, hw, skip=True, backend=self.backend)
        hidden, = norm_linears(x, self.norm2, (self.mlp.fc1,), backend=self.backend)
        return x + self.drop_path(self.mlp.forward_hidden(hidden))
