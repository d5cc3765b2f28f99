"""Triton kernels of mmmila, installed as ``mmmila.kernels`` (imports torch, triton and mmmila.ops).

The public entry is :func:`mila_linear_attention_triton` (forward and backward of MILA's linear
attention), over the registered op ``torch.ops.mmmila.linear_attention_triton``. Importing the
package also registers ``torch.ops.mmmila.dwconv_tokens_triton`` (:mod:`.dwconv`), the Triton
implementation of the depthwise-conv chain op of :mod:`mmmila.ops.dwconv`, and
``norm_linears_triton`` / ``gelu_linear_triton`` (:mod:`.linear_chains`), those of the matrix-product
chains of :mod:`mmmila.ops.linear_chains`. On CPU tensors the kernels run under the Triton
interpreter, which ``TRITON_INTERPRET=1`` enables; it must be set before triton is first imported in
the process.
"""
from .dwconv import DwconvLaunchConfig, dwconv_launch_config, dwconv_tokens_triton
from .function import (device_problem, dtype_problem, input_problem, is_interpreted,
                       linear_attention_triton, mila_linear_attention_triton)
from .heuristics import (SUPPORTED_DTYPES, SUPPORTED_HEAD_DIMS, BlockParams, LaunchConfig, all_block_params,
                         default_params, launch_config)
from .linear_chains import (MAX_CHAIN_LAYERS, MAX_NORM_FEATURES, ChainLaunchConfig, chain_launch_config,
                            gelu_linear_triton, norm_linears_triton)

__all__ = ['linear_attention_triton', 'mila_linear_attention_triton', 'input_problem', 'device_problem',
           'dtype_problem', 'is_interpreted', 'launch_config', 'default_params', 'all_block_params', 'BlockParams',
           'LaunchConfig', 'SUPPORTED_DTYPES', 'SUPPORTED_HEAD_DIMS', 'dwconv_tokens_triton',
           'dwconv_launch_config', 'DwconvLaunchConfig', 'norm_linears_triton', 'gelu_linear_triton',
           'chain_launch_config', 'ChainLaunchConfig', 'MAX_CHAIN_LAYERS', 'MAX_NORM_FEATURES']
