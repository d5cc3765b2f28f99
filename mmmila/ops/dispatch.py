"""Backend choice of :func:`mmmila.ops.mila_linear_attention`.

Backends:

- ``'torch'``: :mod:`mmmila.ops.cpu_fused`, the memory-lean PyTorch autograd Function (any device).
- ``'triton'``: the fused Triton kernels of ``mmmila.kernels`` (CUDA tensors; CPU tensors only
  under the Triton interpreter, ``TRITON_INTERPRET=1`` set before ``mmmila.kernels`` is imported).
- ``'auto'`` (default): ``'triton'`` for CUDA tensors when triton is importable and the kernels
  support the dtype and head dim, ``'torch'`` otherwise.

The environment variable ``MMMILA_ATTN_BACKEND=auto|torch|triton`` replaces the ``'auto'``
default of every call that does not name a backend; an explicit ``'torch'`` or ``'triton'``
argument wins over it. ``'triton'`` never falls back: it raises when the kernels cannot run.
While ``torch.jit`` traces (fvcore / mmengine FLOP counting), the plain reference runs instead of
an autograd Function, so that its matrix products are visible and counted.

Each new (requested, chosen, device, dtype) combination is logged once at INFO level;
:func:`last_backend` and :func:`backend_counts` tell tests which implementation actually ran.
"""
from __future__ import annotations

import importlib
import logging
import os
from collections import Counter

import torch

from .cpu_fused import mila_linear_attention_cpu
from .reference import mila_linear_attention_ref

logger = logging.getLogger(__name__)

ENV_VAR = 'MMMILA_ATTN_BACKEND'
BACKENDS = ('auto', 'torch', 'triton')

_counts: Counter = Counter()
_last: str | None = None
_logged: set = set()


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


def requested_backend(backend: str = 'auto') -> str:
    """The backend a call asks for, after the environment variable; validates both.

    Args:
        backend (str): 'auto' | 'torch' | 'triton'.

    Returns:
        str: 'auto', 'torch' or 'triton'.
    """
    if backend not in BACKENDS:
        raise ValueError(f"attention backend must be one of {BACKENDS}, got {backend!r}")
    if backend == 'auto':
        backend = os.environ.get(ENV_VAR, '').strip().lower() or 'auto'
        if backend not in BACKENDS:
            raise ValueError(f'{ENV_VAR}={os.environ[ENV_VAR]!r} is not one of {BACKENDS}')
    return backend


def triton_problem(qk: torch.Tensor, v: torch.Tensor, hw: tuple[int, int],
                   num_heads: int) -> str | None:
    """Why the Triton kernels cannot run this call, or None when they can."""
    kernels = _triton_module()
    if kernels is None:
        return f'triton is not importable ({_import_error})'
    return kernels.input_problem(qk, v, hw, num_heads) or kernels.device_problem(qk.device)


def _choose(qk: torch.Tensor, v: torch.Tensor, hw: tuple[int, int], num_heads: int,
            requested: str) -> tuple[str, str]:
    """(implementation, why) for a validated ``requested`` backend."""
    if torch.jit.is_tracing():
        return 'reference', 'torch.jit is tracing: plain ops, so that FLOP counters see them'
    if requested == 'torch':
        return 'torch', 'requested'
    if requested == 'auto' and not qk.is_cuda:   # no triton import for CPU work
        return 'torch', 'not on a CUDA device'
    problem = triton_problem(qk, v, hw, num_heads)
    if requested == 'triton':
        if problem is not None:
            raise RuntimeError(f"attention backend 'triton' cannot run: {problem}")
        return 'triton', 'requested'
    if problem is not None:
        return 'torch', problem
    return 'triton', 'CUDA device'


def choose_backend(qk: torch.Tensor, v: torch.Tensor, hw: tuple[int, int], num_heads: int,
                   backend: str = 'auto') -> str:
    """Resolve ``backend`` to the implementation that runs: 'torch', 'triton' or 'reference'.

    Raises:
        ValueError: for an unknown backend name (argument or environment variable).
        RuntimeError: when 'triton' is asked for (argument or environment) and cannot run.
    """
    return _choose(qk, v, hw, num_heads, requested_backend(backend))[0]


def run_attention(qk: torch.Tensor, v: torch.Tensor, hw: tuple[int, int], num_heads: int,
                  backend: str = 'auto') -> torch.Tensor:
    """Run MILA's linear attention with the chosen backend; see the module docstring."""
    global _last
    requested = requested_backend(backend)
    chosen, why = _choose(qk, v, hw, num_heads, requested)
    _last = chosen
    _counts[chosen] += 1
    key = (requested, chosen, qk.device.type, qk.dtype)
    if key not in _logged and len(_logged) < 64:   # once per combination, and bounded
        _logged.add(key)
        logger.info('MILA linear attention: backend %r -> %s (%s %s tensors: %s)', requested, chosen,
                    qk.device.type, str(qk.dtype).replace('torch.', ''), why)
    if chosen == 'triton':
        return _triton_module().mila_linear_attention_triton(qk, v, hw, num_heads)
    if chosen == 'reference':
        return mila_linear_attention_ref(qk, v, hw, num_heads)
    return mila_linear_attention_cpu(qk, v, hw, num_heads)


def last_backend() -> str | None:
    """The implementation that ran the most recent call: 'torch', 'triton' or 'reference'."""
    return _last


def backend_counts() -> dict[str, int]:
    """How many calls each implementation ran in this process (a copy)."""
    return dict(_counts)


def reset_backend_stats() -> None:
    """Forget :func:`last_backend` and the counts (the log-once memory is kept)."""
    global _last
    _last = None
    _counts.clear()
