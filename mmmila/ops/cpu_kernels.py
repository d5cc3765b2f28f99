"""mmmila's compiled CPU kernels (``mmmila._C``, built from ``mmmila/ops/csrc`` by ``setup.py``).

The library registers ``torch.ops.mmmila_cpu.*``: plain compute kernels for CPU tensors, which the
CPU implementations of mmmila's registered ops call (so autograd, torch.compile, torch.export and
the ONNX tool still see one op each; only what runs inside it on a CPU changes). Today:

- ``dwconv_tokens`` and ``dwconv_tokens_backward``: the depthwise 3x3 convolution on tokens with its
  epilogue (:mod:`mmmila.ops.dwconv`), float32 and float64. oneDNN's depthwise convolution has a
  fixed cost of 100-200 us a call; MILA-T's training step makes 144 of these calls and their
  backwards (docs/kernels.md, "Compiled CPU kernels").

Without the library (a source tree that was not installed, a build without a C++ compiler, or
``MMMILA_CPU_KERNELS=0`` in the environment when mmmila is imported) every op runs its PyTorch
implementation, which computes the same thing. :data:`AVAILABLE` says which; :data:`REASON` says why
not.
"""
from __future__ import annotations

import os

import torch

ENV_VAR = 'MMMILA_CPU_KERNELS'
AVAILABLE = False
REASON = ''

if os.environ.get(ENV_VAR, '1').strip().lower() in ('0', 'false', 'no', 'off'):
    REASON = f'{ENV_VAR}={os.environ[ENV_VAR]} in the environment'
else:
    try:
        from mmmila import _C  # noqa: F401  (loading it registers torch.ops.mmmila_cpu)
        AVAILABLE = True
    except ImportError as err:   # not built, or built against another torch
        REASON = f'mmmila._C could not be imported ({err}); install mmmila with `make install` or ' \
                 f'`pip install --no-build-isolation -e .` to build it'

DTYPES = (torch.float32, torch.float64)


def runs(x: torch.Tensor) -> bool:
    """True when the compiled kernels take this CPU tensor's dtype (and the library is loaded)."""
    return AVAILABLE and x.dtype in DTYPES
