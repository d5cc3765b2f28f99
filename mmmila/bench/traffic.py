"""Bytes moved by a call: counted over its ATen ops, and the fused kernels' figure by formula."""
from __future__ import annotations

import torch

# Ops that only re-describe memory (no data moved); everything else is counted as reading its
# tensor inputs and writing its outputs once, the minimum any implementation of that op needs.
VIEW_OPS = {'view', '_unsafe_view', '_reshape_alias', 'reshape', 'transpose', 'permute', 'expand',
            'slice', 'select', 'unsqueeze', 'squeeze', 'as_strided', 'alias', 'detach', 't',
            'split', 'unbind', 'view_as_real', 'view_as_complex', 'unflatten', 'flatten',
            'split_with_sizes', 'lift_fresh', '_conj', 'conj'}


def _touched_bytes(t) -> int:
    if not isinstance(t, torch.Tensor):
        return 0
    return min(t.numel(), t.untyped_storage().nbytes() // t.element_size()) * t.element_size()


def count_traffic(fn, qk, v, g, nh):
    """Bytes read + written by the ATen ops of one forward ``fn(qk, v, nh)`` and one backward
    (``out.backward(g)``), and op counts: (forward bytes, forward ops, backward bytes, backward ops)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class Counter(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.bytes, self.ops = 0, 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func.overloadpacket.__name__.rstrip('_') not in VIEW_OPS:
                tensors = tree_flatten((args, kwargs or {}))[0] + tree_flatten(out)[0]
                self.bytes += sum(_touched_bytes(t) for t in tensors)
                self.ops += 1
            return out

    qk = qk.detach().requires_grad_()
    v = v.detach().requires_grad_()
    fwd, bwd = Counter(), Counter()
    with fwd:
        out = fn(qk, v, nh)
    with bwd:
        out.backward(g)
    return fwd.bytes, fwd.ops, bwd.bytes, bwd.ops


def fused_bytes(n: int, channels: int, elem: int) -> tuple[int, int]:
    """The least bytes any implementation of the op must move for ``n`` tokens (all images) of
    ``channels`` channels, ``elem`` bytes per element: (forward, backward). The fused Triton passes
    move exactly these (docs/kernels.md).

    Forward: read qk (2C) and v (C), write out (C): 4C per token. Backward: read qk (2C), v (C) and
    dL/dout (C), write dL/dqk (2C) and dL/dv (C): 7C per token. The per-head sums S and m
    (d^2 + d float32 per head, written, read and their gradients made once per call) are left out:
    at 512x512 tokens they are about 0.01% of the total.
    """
    return 4 * n * channels * elem, 7 * n * channels * elem
