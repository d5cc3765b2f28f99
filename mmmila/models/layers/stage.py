"""A MILA stage: a run of blocks, then an optional downsampling."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp

from .block import MILABlock
from .conv import Downsample


class MILAStage(nn.Module):
    """``blocks`` at width C, then ``downsample`` to 2C (absent in the last stage).

    Args:
        channels (int): C.
        depth (int): number of blocks.
        num_heads (int): attention heads.
        drop_paths (list[float]): stochastic depth rate of each block.
        downsample (bool): add a Downsample to 2C. Defaults to True.
        mlp_ratio (float): MLP hidden width / C. Defaults to 4.
        with_cp (bool): activation checkpointing per block while training. Defaults to False.
        attn_backend (str): 'auto' | 'torch' | 'triton'. Defaults to 'auto'.
    """

    def __init__(self, channels: int, depth: int, num_heads: int, drop_paths: list[float],
                 downsample: bool = True, mlp_ratio: float = 4.0, with_cp: bool = False,
                 attn_backend: str = 'auto') -> None:
        super().__init__()
        self.with_cp = with_cp
        self.blocks = nn.ModuleList([
            MILABlock(channels, num_heads, mlp_ratio, drop_path=drop_paths[i], attn_backend=attn_backend)
            for i in range(depth)])
        self.downsample = Downsample(channels, channels * 2) if downsample else None

    def forward(self, x: torch.Tensor, hw: tuple[int, int]):
        """Tokens (B, N, C) -> (stage output, its hw, next stage input, its hw)."""
        for block in self.blocks:
            if self.with_cp and self.training and x.requires_grad:
                x = cp.checkpoint(block, x, hw, use_reentrant=False)
            else:
                x = block(x, hw)
        if self.downsample is None:
            return x, hw, x, hw
        x_next, hw_next = self.downsample(x, hw)
        return x, hw, x_next, hw_next
