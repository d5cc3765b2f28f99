"""MILA's linear attention module: ``qk`` projection, the linear-attention op, LePE."""
from __future__ import annotations

import torch
import torch.nn as nn

from mmmila.ops import dwconv_tokens, mila_linear_attention
from mmmila.ops.checks import check_head_layout


class MILAAttention(nn.Module):
    """Linear attention with 2-D RoPE and a locally enhanced positional encoding (LePE).

    ``v`` is the input itself; ``q, k`` come from the ``qk`` projection. See
    :func:`mmmila.ops.mila_linear_attention` for the maths.

    Args:
        channels (int): C.
        num_heads (int): nh, C must be divisible by it.
        qk_bias (bool): bias of the ``qk`` projection. Defaults to True.
        backend (str): attention backend, 'auto' | 'torch' | 'triton'. Defaults to 'auto'.
    """

    def __init__(self, channels: int, num_heads: int, qk_bias: bool = True,
                 backend: str = 'auto') -> None:
        super().__init__()
        check_head_layout(channels, num_heads)
        self.channels = channels
        self.num_heads = num_heads
        self.backend = backend
        self.qk = nn.Linear(channels, channels * 2, bias=qk_bias)
        self.lepe = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)

    def forward(self, x: torch.Tensor, hw: tuple[int, int],
                gate: torch.Tensor | None = None) -> torch.Tensor:
        """``attention(x) + lepe(x)``, times ``silu(gate)`` if given (MILA's gate, applied here so that
        it joins LePE in one op).

        Args:
            x (Tensor): (B, N, C) with N = H * W.
            hw (tuple[int, int]): (H, W).
            gate (Tensor, optional): (B, N, C), the block's ``act_proj`` output.

        Returns:
            Tensor: (B, N, C).
        """
        out = mila_linear_attention(self.qk(x), x, hw, self.num_heads, backend=self.backend)
        return dwconv_tokens(x, self.lepe.weight, self.lepe.bias, hw, residual=out, gate=gate,
                             backend=self.backend)

    def extra_repr(self) -> str:
        return f'channels={self.channels}, num_heads={self.num_heads}, backend={self.backend!r}'
