"""The dispatch tests run the Triton kernels on CPU tensors through the Triton interpreter.

Triton decides interpret-or-compile when ``@triton.jit`` runs, i.e. when ``mmmila.kernels`` is first
imported; this file is imported during collection, before any test imports it. On a machine with
CUDA the kernels stay compiled and run on the GPU.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ['TRITON_INTERPRET'] = '1'
