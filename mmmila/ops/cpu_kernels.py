"""mmmila's compiled CPU kernels (``mmmila._C``, built from ``mmmila/ops/csrc`` by ``setup.py``).

The library registers ``torch.ops.mmmila_cpu.*``: plain compute kernels for CPU tensors, which the
CPU implementations of mmmila's registered ops call (so autograd, torch.compile, torch.export and
the ONNX tool still see one op each; only what runs inside it on a CPU changes). The kernels,
float32 and float64 (docs/kernels.md, "Compiled CPU kernels"):

- ``dwconv_tokens`` and ``dwconv_tokens_backward``: the depthwise 3x3 convolution on tokens with its
  epilogue (:mod:`mmmila.ops.dwconv`). oneDNN's depthwise convolution has a fixed cost of 100-200 us
  a call; MILA-T's training step makes 144 of these calls and their backwards.
- ``dwconv_s2_relu`` and ``dwconv_s2_relu_backward_``: the Downsample's stride-2 depthwise
  convolution between its two ReLUs, on a chunk of the expanded map (:mod:`mmmila.ops.downsample`);
  the backward writes dL/da over the chunk's expansion a.
- ``linear_attention`` and ``linear_attention_backward``: MILA's linear attention, the chunked passes
  of :mod:`mmmila.ops.cpu_fused` with the feature map, RoPE and the normaliser (and their gradients)
  in one elementwise pass before each matrix product and one after it (``csrc/attention.cpp``).
- ``gelu_grad_``: GELU's recomputation and gradient in the backward of GELU + ``fc2``
  (:mod:`mmmila.ops.linear_chains`).

Without the library (a source tree that was not installed, a build without a C++ compiler, or
``MMMILA_CPU_KERNELS=0`` in the environment when mmmila is imported) every op runs its PyTorch
implementation, which computes the same thing. :data:`AVAILABLE` says which; :data:`REASON` says why
not.
"""
from __future__ import annotations

import importlib.util
import os

import torch

ENV_VAR = 'MMMILA_CPU_KERNELS'
AVAILABLE = False
REASON = ''

if os.environ.get(ENV_VAR, '1').strip().lower() in ('0', 'false', 'no', 'off'):
    REASON = f'{ENV_VAR}={os.environ[ENV_VAR]} in the environment'
else:
    _BUILD = 'install mmmila with `make install` or `pip install --no-build-isolation -e .` to build it'
    if importlib.util.find_spec('mmmila._C') is None:
        REASON = f'mmmila._C is not built; {_BUILD}'
    else:
        try:
            from mmmila import _C  # noqa: F401  (loading it registers torch.ops.mmmila_cpu)
            AVAILABLE = True
        except ImportError as err:   # built against another torch, or for another machine
            REASON = f'mmmila._C could not be loaded ({err}); {_BUILD} against this torch'

DTYPES = (torch.float32, torch.float64)


def runs(x: torch.Tensor) -> bool:
    """True when the compiled kernels take this CPU tensor's dtype (and the library is loaded)."""
    return AVAILABLE and x.dtype in DTYPES
