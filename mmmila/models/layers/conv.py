"""Convolutional parts of MILA: ConvLayer, the stride-4 Stem and the Downsample between stages.

Module names follow the authors' checkpoints (``conv``, ``norm``; ``conv1``..``conv3``).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmmila.ops import expand_dwconv
from mmmila.ops.layout import as_tokens


def foldable(norm: nn.Module | None) -> bool:
    """True when ``norm`` is a BatchNorm that normalises with its running statistics (eval mode),
    i.e. a fixed per-channel affine map that can be folded into the preceding conv or linear."""
    return (isinstance(norm, nn.modules.batchnorm._BatchNorm) and not norm.training
            and norm.running_mean is not None and norm.running_var is not None)


def folded_weight_bias(weight: torch.Tensor, bias: torch.Tensor | None,
                       norm: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of a conv/linear followed by an eval-mode BatchNorm, as one layer.

    Computed on every call from the current parameters and buffers (tiny tensors), so nothing is
    cached, state dicts are unchanged and gradients still reach the conv and the norm.
    """
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    w = weight * scale.view((-1,) + (1,) * (weight.dim() - 1))
    return w, shift if bias is None else torch.addcmul(shift, bias, scale)


class ConvLayer(nn.Module):
    """Conv2d, then an optional BatchNorm2d, then an optional ReLU (applied in place).

    In eval mode the BatchNorm is folded into the conv (see :func:`folded_weight_bias`): one
    pass over the map instead of two. :meth:`forward_tokens` applies a 1x1 ConvLayer to tokens
    (B, N, C) as a linear layer.

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
        self.act = nn.ReLU(inplace=True) if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        if foldable(self.norm):
            w, b = folded_weight_bias(conv.weight, conv.bias, self.norm)
            x = F.conv2d(x, w, b, conv.stride, conv.padding, conv.dilation, conv.groups)
        else:
            x = conv(x)
            if self.norm is not None:
                x = self.norm(x)
        # in place: neither the conv nor the BatchNorm needs its output for backward
        return x if self.act is None else self.act(x)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """A 1x1, stride-1 ConvLayer on tokens (B, N, C_in) -> (B, N, C_out): a linear layer.

        The BatchNorm runs over the tokens as over the map's pixels (the same statistics).
        """
        conv = self.conv
        if conv.kernel_size != (1, 1) or conv.stride != (1, 1) or conv.groups != 1 or conv.padding != (0, 0):
            raise ValueError(f'forward_tokens needs a 1x1, stride-1, ungrouped conv, got {conv}')
        shape = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])   # 2-D, so that the in-place ReLU acts on a base tensor
        if foldable(self.norm):
            w, b = folded_weight_bias(conv.weight.flatten(1), conv.bias, self.norm)
            x = F.linear(x, w, b)
        else:
            x = F.linear(x, conv.weight.flatten(1), conv.bias)
            if self.norm is not None:
                x = self.norm(x.view(*x.shape, 1, 1))
        if self.act is not None:
            x = self.act(x)
        return x.view(*shape, conv.out_channels)   # sizes spelled out: an empty batch has no -1 to infer


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
        # channels-last maps throughout: oneDNN's fast layout on CPU, and the last 1x1 layer then
        # reads the map as tokens without a transposed copy
        x = pad_to_multiple(x, 4).contiguous(memory_format=torch.channels_last)
        x = self.conv1(x)
        x = self.conv2(x).add_(x)   # in place on a fresh output, not needed for backward
        x = self.conv3[0](x)
        hw = (x.shape[2], x.shape[3])
        return self.conv3[1].forward_tokens(as_tokens(x)), hw


class Downsample(nn.Module):
    """Halve the map and double the channels: tokens (B, H*W, C) -> (B, ceil(H/2)*ceil(W/2), 2C).

    ``conv``: 1x1 C->8C (ReLU), 3x3 stride-2 depthwise (ReLU), 1x1 8C->2C (BN). A map with an odd
    side is zero-padded by one row/column at the bottom/right first. The first two run as one op,
    :func:`mmmila.ops.expand_dwconv`, which never holds the expanded map (8C channels at full
    resolution, the largest activation of the backbone) whole and recomputes it in backward.

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
        H, W = hw
        if H % 2 or W % 2:   # pad the input, as the 1x1 conv with its bias sees the padded map
            x = F.pad(x.reshape(B, H, W, C), (0, 0, 0, W % 2, 0, H % 2))
            H, W = H + H % 2, W + W % 2
            x = x.view(B, H * W, C)
        expand, dw, project = self.conv
        x = expand_dwconv(x, expand.conv.weight.flatten(1), expand.conv.bias, dw.conv.weight, dw.conv.bias,
                          (H, W))
        return project.forward_tokens(x), (H // 2, W // 2)
