"""Backend choice of :func:`mmmila.ops.mila_linear_attention`.

Backends:

- ``'torch'``: the registered op ``torch.ops.mmmila.linear_attention`` (:mod:`mmmila.ops.library`),
  the memory-lean PyTorch path (any device).
- ``'triton'``: ``torch.ops.mmmila.linear_attention_triton``, the fused Triton kernels of
  ``mmmila.kernels`` (CUDA tensors; CPU tensors only under the Triton interpreter,
  ``TRITON_INTERPRET=1`` set before ``mmmila.kernels`` is imported).
- ``'auto'`` (default): ``'triton'`` for CUDA tensors when triton is importable and the kernels
  support the dtype and head dim, ``'torch'`` otherwise.

The environment variable ``MMMILA_ATTN_BACKEND=auto|torch|triton`` replaces the ``'auto'``
default of every call that does not name a backend; an explicit ``'torch'`` or ``'triton'``
argument wins over it. ``'triton'`` never falls back: it raises when the kernels cannot run.
While ``torch.jit`` traces (fvcore / mmengine FLOP counting) and while ``torch.onnx`` exports, the
plain reference (:func:`mmmila.ops.reference.mila_linear_attention_ref`) runs instead of an op, so
that its matrix products are visible: counted by FLOP counters, written as plain ONNX operators.

The choice is a pure function of the call (:func:`choose_backend`); nothing is counted or logged
per call, so ``torch.compile`` traces the choice away. Tests observe the op that ran with a
dispatch mode (``mmmila/bench/attention_calls.py``).

The inputs are checked once, before the choice (:func:`mmmila.ops.checks.check_attention_inputs`);
the registered ops run on checked inputs.
"""
from __future__ import annotations

import importlib
import os
from typing import Callable

import torch

from . import library  # noqa: F401  (registers torch.ops.mmmila.linear_attention)
from .capture import wants_plain_ops
from .checks import check_attention_inputs
from .dwconv import check_dwconv_inputs, dwconv_tokens_ref
from .downsample import check_expand_dwconv_inputs, expand_dwconv_ref
from .linear_chains import check_linear_chain, check_norm_linears, gelu_linear_ref, norm_linears_ref
from .reference import mila_linear_attention_ref

ENV_VAR = 'MMMILA_ATTN_BACKEND'
# The backend names, here only: the model's ``attn_backend`` arguments take these.
BACKENDS = ('auto', 'torch', 'triton')

_kernels = None
_import_error: str | None = None


def _triton_module():
    """``mmmila.kernels`` if triton imports, else None; the import is tried once per process."""
    global _kernels, _import_error
    if _kernels is None and _import_error is None:
        try:
            _kernels = importlib.import_module('mmmila.kernels')
        except ImportError as err:  # triton missing or broken
            _import_error = f'{type(err).__name__}: {err}'
    return _kernels


def check_backend(backend: str, name: str = 'attention backend') -> str:
    """``backend`` if it is one of :data:`BACKENDS`; else a ValueError that says ``name`` and the choices."""
    if backend not in BACKENDS:
        raise ValueError(f'{name} must be one of {BACKENDS}, got {backend!r}')
    return backend


def requested_backend(backend: str = 'auto') -> str:
    """The backend a call asks for, after the environment variable; validates both.

    Args:
        backend (str): one of :data:`BACKENDS`.

    Returns:
        str: 'auto', 'torch' or 'triton'.
    """
    if backend != 'auto':
        return check_backend(backend)
    env = os.environ.get(ENV_VAR)
    return check_backend(env.strip().lower() or 'auto', ENV_VAR) if env else 'auto'


def triton_problem(qk: torch.Tensor, v: torch.Tensor, num_heads: int) -> str | None:
    """Why the Triton kernels cannot run this attention call (checked inputs), or None when they can."""
    kernels = _triton_module()
    if kernels is None:
        return f'triton is not importable ({_import_error})'
    return kernels.input_problem(qk, v, num_heads) or kernels.device_problem(qk.device)


def dwconv_triton_problem(x: torch.Tensor) -> str | None:
    """Why the Triton kernels cannot run this :func:`run_dwconv` call, or None when they can."""
    kernels = _triton_module()
    if kernels is None:
        return f'triton is not importable ({_import_error})'
    return kernels.dtype_problem({'x': x}) or kernels.device_problem(x.device)


def chain_triton_problem(x: torch.Tensor, weights, norm: bool) -> str | None:
    """Why the Triton kernels cannot run this :func:`run_norm_linears` (``norm``) or
    :func:`run_gelu_linear` call, or None when they can."""
    kernels = _triton_module()
    if kernels is None:
        return f'triton is not importable ({_import_error})'
    supported = kernels.SUPPORTED_DTYPES
    if x.dtype not in supported or any(w.dtype not in supported for w in weights):
        # names made only for the message (this runs on every call)
        return kernels.dtype_problem({'the input': x} | {f'weight {i}': w for i, w in enumerate(weights)})
    if norm and len(weights) > kernels.MAX_CHAIN_LAYERS:
        return f'the Triton kernels take at most {kernels.MAX_CHAIN_LAYERS} linear layers after a norm'
    if norm and x.shape[-1] > kernels.MAX_NORM_FEATURES:
        return (f'the Triton norm kernels hold whole rows: at most {kernels.MAX_NORM_FEATURES} '
                f'features, got {x.shape[-1]}')
    return kernels.device_problem(x.device)


def _choose(x: torch.Tensor, problem: Callable[[], str | None], requested: str) -> tuple[str, str]:
    """(implementation, why) for checked inputs on x's device and a validated ``requested`` backend;
    ``problem()`` says why the Triton kernels cannot run the call (None: they can)."""
    if wants_plain_ops():
        return 'reference', 'torch.jit is tracing or torch.onnx exporting: plain ops'
    if requested == 'torch':
        return 'torch', 'requested'
    if requested == 'auto' and not x.is_cuda:   # no triton import for CPU work
        return 'torch', 'not on a CUDA device'
    reason = problem()
    if requested == 'triton':
        if reason is not None:
            raise RuntimeError(f"backend 'triton' cannot run: {reason}")
        return 'triton', 'requested'
    if reason is not None:
        return 'torch', reason
    return 'triton', 'CUDA device'


def choose_backend(qk: torch.Tensor, v: torch.Tensor, hw: tuple[int, int], num_heads: int,
                   backend: str = 'auto') -> str:
    """Check the inputs and resolve ``backend`` to the implementation that runs: 'torch', 'triton'
    or 'reference'.

    Raises:
        ValueError: for malformed inputs (:func:`check_attention_inputs`) or an unknown backend
            name (argument or environment variable).
        RuntimeError: when 'triton' is asked for (argument or environment) and cannot run.
    """
    check_attention_inputs(qk, v, hw, num_heads)
    return _choose(qk, lambda: triton_problem(qk, v, num_heads), requested_backend(backend))[0]


def run_attention(qk: torch.Tensor, v: torch.Tensor, hw: tuple[int, int], num_heads: int,
                  backend: str = 'auto') -> torch.Tensor:
    """Run MILA's linear attention with the chosen backend; see the module docstring."""
    chosen = choose_backend(qk, v, hw, num_heads, backend)
    if chosen == 'triton':
        return torch.ops.mmmila.linear_attention_triton(qk, v, hw[0], hw[1], num_heads)[0]
    if chosen == 'reference':
        return mila_linear_attention_ref(qk, v, hw, num_heads)
    return torch.ops.mmmila.linear_attention(qk, v, hw[0], hw[1], num_heads)[0]


def run_dwconv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, hw: tuple[int, int],
               residual: torch.Tensor | None = None, gate: torch.Tensor | None = None,
               skip: bool = False, act: str = 'none', backend: str = 'auto') -> torch.Tensor:
    """Run the depthwise-conv chain of :mod:`mmmila.ops.dwconv` with the chosen backend (as for the
    attention: 'triton' for CUDA tensors under 'auto', plain ops while tracing or exporting)."""
    check_dwconv_inputs(x, weight, bias, hw, residual, gate, act)
    chosen = _choose(x, lambda: dwconv_triton_problem(x), requested_backend(backend))[0]
    if chosen == 'reference':
        return dwconv_tokens_ref(x, weight, bias, hw, residual, gate, skip, act)
    op = torch.ops.mmmila.dwconv_tokens_triton if chosen == 'triton' else torch.ops.mmmila.dwconv_tokens
    return op(x, weight, bias, hw[0], hw[1], residual, gate, skip, act)


def run_norm_linears(x: torch.Tensor, norm, linears, backend: str = 'auto') -> tuple[torch.Tensor, ...]:
    """Run the LayerNorm-then-linear-layers chain of :mod:`mmmila.ops.linear_chains` with the chosen
    backend (as for the attention: 'triton' for CUDA tensors under 'auto', plain ops while tracing
    or exporting)."""
    check_norm_linears(x, norm, linears)
    weights = [lin.weight for lin in linears]
    chosen = _choose(x, lambda: chain_triton_problem(x, weights, True), requested_backend(backend))[0]
    if chosen == 'reference':
        return norm_linears_ref(x, norm, linears)
    op = torch.ops.mmmila.norm_linears_triton if chosen == 'triton' else torch.ops.mmmila.norm_linears
    return tuple(op(x, norm.weight, norm.bias, norm.eps, weights, [lin.bias for lin in linears]))


def run_gelu_linear(h: torch.Tensor, linear, backend: str = 'auto') -> torch.Tensor:
    """Run the GELU-then-linear chain of :mod:`mmmila.ops.linear_chains` with the chosen backend."""
    check_linear_chain(h, [linear])
    chosen = _choose(h, lambda: chain_triton_problem(h, [linear.weight], False),
                     requested_backend(backend))[0]
    if chosen == 'reference':
        return gelu_linear_ref(h, linear)
    op = torch.ops.mmmila.gelu_linear_triton if chosen == 'triton' else torch.ops.mmmila.gelu_linear
    return op(h, linear.weight, linear.bias)


def run_expand_dwconv(x: torch.Tensor, expand_weight: torch.Tensor, expand_bias: torch.Tensor,
                      dw_weight: torch.Tensor, dw_bias: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Run the Downsample's expansion of :mod:`mmmila.ops.downsample`: its registered op (one
    implementation, any device), or plain ops while torch.jit traces or the ONNX exporter runs."""
    check_expand_dwconv_inputs(x, expand_weight, expand_bias, dw_weight, dw_bias, hw)
    if wants_plain_ops():
        return expand_dwconv_ref(x, expand_weight, expand_bias, dw_weight, dw_bias, hw)
    return torch.ops.mmmila.expand_dwconv(x, expand_weight, expand_bias, dw_weight, dw_bias, hw[0], hw[1])
