"""MILA's linear attention op. The model calls only :func:`mila_linear_attention`.

Importing this package registers ``torch.ops.mmmila.linear_attention`` (:mod:`.library`).
"""
from __future__ import annotations

import torch

from .checks import check_attention_inputs
from .dispatch import (BACKENDS, ENV_VAR, choose_backend, run_attention, run_dwconv, run_expand_dwconv,
                       run_gelu_linear, run_norm_linears)
from .library import mila_linear_attention_cpu
from .reference import mila_linear_attention_ref
from .rope2d import apply_rope2d, rope2d_cos_sin


def mila_linear_attention(qk: torch.Tensor, v: torch.Tensor, hw: tuple[int, int], num_heads: int,
                          backend: str = 'auto') -> torch.Tensor:
    """MILA linear attention before LePE; see :func:`mila_linear_attention_ref` for the maths.

    Args:
        qk (Tensor): (B, N, 2C), output of the ``qk`` projection.
        v (Tensor): (B, N, C), the attention's input.
        hw (tuple[int, int]): map size (H, W), H * W = N.
        num_heads (int): nh.
        backend (str): one of ``BACKENDS``, 'auto' | 'torch' | 'triton'. 'auto' takes the Triton
            kernels for CUDA tensors (when triton imports and supports the dtype and head dim) and
            the PyTorch path otherwise; the environment variable ``MMMILA_ATTN_BACKEND``
            overrides 'auto'. 'triton' raises instead of falling back. :func:`choose_backend`
            says which implementation a call takes. Defaults to 'auto'.

    Returns:
        Tensor: (B, N, C) in v's dtype.

    Raises:
        ValueError: for malformed inputs (:func:`check_attention_inputs` says what is wrong) or an
            unknown backend name.
        RuntimeError: when 'triton' is asked for and cannot run.
    """
    return run_attention(qk, v, hw, num_heads, backend)


def dwconv_tokens(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, hw: tuple[int, int],
                  residual: torch.Tensor | None = None, gate: torch.Tensor | None = None,
                  skip: bool = False, act: str = 'none', backend: str = 'auto') -> torch.Tensor:
    """A depthwise 3x3 convolution on tokens and what follows it, as one op (:mod:`mmmila.ops.dwconv`)::

        p = dwconv3x3(x) + bias;  s = act(p) + (x if skip) + (residual);  out = s * silu(gate)

    Args:
        x (Tensor): tokens (B, N, C) of an (H, W) map, row-major.
        weight (Tensor): (C, 1, 3, 3), a depthwise conv's weight.
        bias (Tensor): (C,).
        hw (tuple[int, int]): (H, W), H * W = N.
        residual (Tensor, optional): (B, N, C), added after the activation.
        gate (Tensor, optional): (B, N, C); the sum is multiplied by ``silu(gate)``.
        skip (bool): add x itself. Defaults to False.
        act (str): 'none' or 'silu', applied to ``p``. Defaults to 'none'.
        backend (str): 'auto' | 'torch' | 'triton', chosen as for :func:`mila_linear_attention`.

    Returns:
        Tensor: (B, N, C) in x's dtype.
    """
    return run_dwconv(x, weight, bias, hw, residual, gate, skip, act, backend)


def norm_linears(x: torch.Tensor, norm, linears, backend: str = 'auto') -> tuple[torch.Tensor, ...]:
    """``tuple(lin(norm(x)) for lin in linears)`` as one op (:mod:`mmmila.ops.linear_chains`), which
    keeps x, not the norm's output, for backward.

    Args:
        x (Tensor): (..., C).
        norm (nn.LayerNorm): over the last dim, with weight and bias.
        linears (Sequence[nn.Linear]): layers with C input features and a bias.
        backend (str): 'auto' | 'torch' | 'triton', chosen as for :func:`mila_linear_attention`.

    Returns:
        tuple[Tensor, ...]: one output per linear layer, in x's dtype.
    """
    return run_norm_linears(x, norm, linears, backend)


def gelu_linear(h: torch.Tensor, linear, backend: str = 'auto') -> torch.Tensor:
    """``linear(gelu(h))`` (exact GELU) as one op (:mod:`mmmila.ops.linear_chains`), which keeps h,
    not GELU's output, for backward; ``linear`` has a bias. ``backend`` as for :func:`norm_linears`."""
    return run_gelu_linear(h, linear, backend)


def expand_dwconv(x: torch.Tensor, expand_weight: torch.Tensor, expand_bias: torch.Tensor,
                  dw_weight: torch.Tensor, dw_bias: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """The Downsample's expansion as one op (:mod:`mmmila.ops.downsample`), which never holds the
    expanded map whole and keeps x, not the map, for backward::

        out = relu(dwconv3x3_stride2(relu(x expand_weight^T + expand_bias)) + dw_bias)

    Args:
        x (Tensor): tokens (B, N, C) of an (H, W) map, row-major, H and W even.
        expand_weight (Tensor): (hidden, C), the 1x1 conv's weight as a matrix.
        expand_bias (Tensor): (hidden,).
        dw_weight (Tensor): (hidden, 1, 3, 3), the depthwise conv's weight.
        dw_bias (Tensor): (hidden,).
        hw (tuple[int, int]): (H, W), H * W = N.

    Returns:
        Tensor: tokens (B, H/2 * W/2, hidden) in x's dtype.
    """
    return run_expand_dwconv(x, expand_weight, expand_bias, dw_weight, dw_bias, hw)


__all__ = ['mila_linear_attention', 'dwconv_tokens', 'norm_linears', 'gelu_linear', 'expand_dwconv',
           'mila_linear_attention_ref', 'mila_linear_attention_cpu',
           'rope2d_cos_sin', 'apply_rope2d', 'choose_backend', 'check_attention_inputs', 'BACKENDS',
           'ENV_VAR']
