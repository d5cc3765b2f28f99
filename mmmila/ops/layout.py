"""Tokens and maps: MILA keeps activations as tokens (B, N, C), N = H * W in row-major order; a
convolution reads them as a (B, C, H, W) map. These are the two views between the layouts."""
from __future__ import annotations

import torch


def as_map(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Tokens (B, N, C) -> a (B, C, H, W) view, channels-last when the tokens are contiguous."""
    return x.reshape(x.shape[0], hw[0], hw[1], x.shape[2]).permute(0, 3, 1, 2)


def as_tokens(x: torch.Tensor) -> torch.Tensor:
    """A (B, C, H, W) map -> tokens (B, H W, C): a view of a channels-last map, else a copy."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], x.shape[2] * x.shape[3], x.shape[1])


def check_token_map(x: torch.Tensor, hw: tuple[int, int]) -> tuple[int, int, int]:
    """(B, N, C) of floating-point tokens ``x`` that form an (H, W) map; a ValueError naming what is
    wrong otherwise (the check every op on token maps starts with)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or not x.is_floating_point():
        raise ValueError(f'x must be floating-point tokens (B, N, C), got '
                         f'{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}')
    B, N, C = x.shape
    if len(hw) != 2 or hw[0] * hw[1] != N:
        raise ValueError(f'map size hw={tuple(hw)} does not match N={N} tokens')
    return B, N, C


def channels_last_depthwise(weight: torch.Tensor) -> torch.Tensor:
    """A depthwise 3x3 weight (C, 1, 3, 3) as a view with channels-last strides (the same addresses,
    as its in-channel axis has size 1): the convolution of a channels-last map sees one layout."""
    w = weight.contiguous()
    return w.as_strided(w.shape, (9, 1, 3, 1))
