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

import torch

from . import library  # noqa: F401  (registers torch.ops.mmmila.linear_attention)
from .checks import check_attention_inputs
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
    if check_backend(backend) == 'auto':
        backend = check_backend(os.environ.get(ENV_VAR, '').strip().lower() or 'auto', ENV_VAR)
    return backend


def triton_problem(qk: torch.Tensor, v: torch.Tensor, num_heads: int) -> str | None:
    """Why the Triton kernels cannot run this call (checked inputs), or None when they can."""
    kernels = _triton_module()
    if kernels is None:
        return f'triton is not importable ({_import_error})'
    return kernels.input_problem(qk, v, num_heads) or kernels.device_problem(qk.device)


def _choose(qk: torch.Tensor, v: torch.Tensor, num_heads: int, requested: str) -> tuple[str, str]:
    """(implementation, why) for checked inputs and a validated ``requested`` backend."""
    if torch.jit.is_tracing():
        return 'reference', 'torch.jit is tracing: plain ops, so that FLOP counters see them'
    if not torch.compiler.is_dynamo_compiling() and torch.onnx.is_in_onnx_export():
        return 'reference', 'torch.onnx is exporting: plain ops, so that ONNX runtimes need no custom op'
    if requested == 'torch':
        return 'torch', 'requested'
    if requested == 'auto' and not qk.is_cuda:   # no triton import for CPU work
        return 'torch', 'not on a CUDA device'
    problem = triton_problem(qk, v, num_heads)
    if requested == 'triton':
        if problem is not None:
            raise RuntimeError(f"attention backend 'triton' cannot run: {problem}")
        return 'triton', 'requested'
    if problem is not None:
        return 'torch', problem
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
    return _choose(qk, v, num_heads, requested_backend(backend))[0]


def run_attention(qk: torch.Tensor, v: torch.Tensor, hw: tuple[int, int], num_heads: int,
                  backend: str = 'auto') -> torch.Tensor:
    """Run MILA's linear attention with the chosen backend; see the module docstring."""
    chosen = choose_backend(qk, v, hw, num_heads, backend)
    if chosen == 'triton':
        return torch.ops.mmmila.linear_attention_triton(qk, v, hw[0], hw[1], num_heads)[0]
    if chosen == 'reference':
        return mila_linear_attention_ref(qk, v, hw, num_heads)
    return torch.ops.mmmila.linear_attention(qk, v, hw[0], hw[1], num_heads)[0]
