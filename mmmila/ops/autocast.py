"""How mmmila's registered ops behave under autocast: one rule, registered per op.

A registered op without an autocast rule receives whatever dtypes autocast left it;
PyTorch's own ``register_autocast`` casts *every* floating-point input. MILA's ops need a choice:
the activations (and the weights of matrix products) in the autocast dtype, while the weights of
elementwise chains (a depthwise kernel, a bias, a LayerNorm's scale) stay float32 and are read as
they are by the implementations. :func:`register_autocast_rule` registers that for the CPU and CUDA
autocast keys: it casts the inputs at the given positions (a tensor, or each tensor of a list) and
runs the op with autocast off. The casts happen above autograd, so autograd records them and its
backward casts the gradients back; the backward ops get a rule that casts nothing.
"""
from __future__ import annotations

import torch

_LIBRARIES: list = []   # keeps the registrations alive


def _cast(arg, dtype: torch.dtype):
    if isinstance(arg, torch.Tensor):
        return arg.to(dtype) if arg.is_floating_point() and arg.dtype != dtype else arg
    if isinstance(arg, (list, tuple)):
        return type(arg)(_cast(a, dtype) for a in arg)
    return arg


def register_autocast_rule(op_name: str, cast: tuple[int, ...]) -> None:
    """Under CPU and CUDA autocast, run ``torch.ops.mmmila.<op_name>`` with the inputs at positions
    ``cast`` cast to the autocast dtype, the others as they are, and autocast off inside."""
    lib = torch.library.Library('mmmila', 'FRAGMENT')
    _LIBRARIES.append(lib)
    for device_type in ('cpu', 'cuda'):
        key = 'Autocast' + torch._C._dispatch_key_for_device(device_type)
        excluded = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))

        def kernel(keyset, *args, _excluded=excluded, _device_type=device_type):
            dtype = torch.get_autocast_dtype(_device_type)
            args = tuple(_cast(a, dtype) if i in cast else a for i, a in enumerate(args))
            with torch._C._ExcludeDispatchKeyGuard(_excluded):
                return getattr(torch.ops.mmmila, op_name).default(*args)

        lib.impl(op_name, kernel, key, with_keyset=True)
