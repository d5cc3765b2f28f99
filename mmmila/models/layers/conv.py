"""Convolutional parts of MILA: ConvLayer, the stride-4 Stem and the Downsample between stages.

Module names follow the authors' checkpoints (``conv``, ``norm``; ``conv1``..``conv3``).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvLayer(nn.Module):
    """Conv2d, then an optional BatchNorm2d, then an optional activation.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        kernel_size (int): square kernel size.
        stride (int): stride. Defaults to 1.
        padding (int): zero padding. Defaults to 0.
        groups (int): conv groups. Defaults to 1.
        bias (bool): conv bias. Defaults to True.
        norm (bool): add BatchNorm2d as ``norm``. Defaults to True.
        act (bool): add ReLU. Defaults to True.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, groups: int = 1, bias: bool = True, norm: bool = True,
                 act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                              groups=groups, bias=bias)
        self.norm = nn.BatchNorm2d(out_channels) if norm else None
        self.act = nn.ReLU() if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        return x


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad a (B, C, H, W) map on the bottom/right to multiples of ``multiple``."""
    pad_h = -x.shape[-2] % multiple
    pad_w = -x.shape[-1] % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x


class Stem(nn.Module):
    """Stride-4 stem (``patch_embed``): image (B, 3, H, W) -> tokens (B, H/4 * W/4, C).

    ``conv1`` (3x3 s2) -> ``conv2`` (two 3x3, residual) -> ``conv3`` (3x3 s2 to 4C, 1x1 to C).
    The image is zero-padded on the bottom/right to a multiple of 4 first.

    Args:
        in_channels (int): image channels.
        embed_dims (int): C, output channels.
    """

    def __init__(self, in_channels: int, embed_dims: int) -> None:
        super().__init__()
        half = embed_dims // 2
        self.conv1 = ConvLayer(in_channels, half, 3, 2, 1, bias=False)
        self.conv2 = nn.Sequential(ConvLayer(half, half, 3, 1, 1, bias=False),
                                   ConvLayer(half, half, 3, 1, 1, bias=False, act=False))
        self.conv3 = nn.Sequential(ConvLayer(half, embed_dims * 4, 3, 2, 1, bias=False),
                                   ConvLayer(embed_dims * 4, embed_dims, 1, bias=False, act=False))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = pad_to_multiple(x, 4)
        x = self.conv1(x)
        x = self.conv2(x) + x
        x = self.conv3(x)
        hw = (x.shape[2], x.shape[3])
        return x.flatten(2).transpose(1, 2), hw


class Downsample(nn.Module):
    """Halve the map and double the channels: tokens (B, H*W, C) -> (B, ceil(H/2)*ceil(W/2), 2C).

    ``conv``: 1x1 C->8C (ReLU), 3x3 stride-2 depthwise (ReLU), 1x1 8C->2C (BN). A map with an odd
    side is zero-padded by one row/column at the bottom/right first.

    Args:
        in_channels (int): C.
        out_channels (int): output channels, 2C in MILA; the hidden width is 4x this (8C).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        hidden = out_channels * 4
        self.conv = nn.Sequential(
            ConvLayer(in_channels, hidden, 1, norm=False),
            ConvLayer(hidden, hidden, 3, 2, 1, groups=hidden, norm=False),
            ConvLayer(hidden, out_channels, 1, act=False))

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        B, N, C = x.shape
        x = x.transpose(1, 2).reshape(B, C, hw[0], hw[1])
        x = self.conv(pad_to_multiple(x, 2))
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])
