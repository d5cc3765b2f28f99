"""Host time of mmmila's dispatch layer: the Python that runs before each of the block's registered
ops (the input checks, the backend choice, the "is a graph being captured?" question).

On a GPU the eager training step is bound by the host (docs/gpu.md), so microseconds per call add
up over the ~150 op calls of a MILA-T forward. This module times the layer alone: each entry point
of :mod:`mmmila.ops.dispatch` is called on small inputs with ``torch.ops.mmmila`` replaced by stubs
that return at once, so neither the dispatcher, autograd nor the work of the ops is in the figure.
The calls per forward are counted on the backbone itself (:func:`op_calls_per_forward`).
"""
from __future__ import annotations

import timeit
from collections import Counter
from typing import Callable
from unittest import mock

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

from mmmila.ops import dispatch

# entry point -> the registered ops it calls (the PyTorch and the Triton implementation)
ENTRY_POINTS = {
    'dwconv': ('dwconv_tokens', 'dwconv_tokens_triton'),
    'norm_linears': ('norm_linears', 'norm_linears_triton'),
    'gelu_linear': ('gelu_linear', 'gelu_linear_triton'),
    'attention': ('linear_attention', 'linear_attention_triton'),
    'expand_dwconv': ('expand_dwconv',),
}


class _StubOps:
    """Stands in for ``torch.ops.mmmila``: every op returns its first argument three times (as many
    outputs as any of them has), with no work."""

    def __getattr__(self, name: str) -> Callable:
        return lambda x, *args: (x, x, x)


def _calls(backend: str) -> dict[str, Callable[[], object]]:
    """One call of each entry point on small CPU inputs (B 1, 8 x 8 map, C 32)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 64, 32, generator=gen)
    w, b = torch.randn(32, 1, 3, 3, generator=gen), torch.randn(32, generator=gen)
    norm, lins, fc2 = nn.LayerNorm(32), [nn.Linear(32, 32), nn.Linear(32, 32)], nn.Linear(32, 32)
    qk = torch.randn(1, 64, 64, generator=gen)
    ew, eb = torch.randn(128, 32, generator=gen), torch.randn(128, generator=gen)
    dw, db = torch.randn(128, 1, 3, 3, generator=gen), torch.randn(128, generator=gen)
    return {
        'dwconv': lambda: dispatch.run_dwconv(x, w, b, (8, 8), residual=x, gate=x, backend=backend),
        'norm_linears': lambda: dispatch.run_norm_linears(x, norm, lins, backend=backend),
        'gelu_linear': lambda: dispatch.run_gelu_linear(x, fc2, backend=backend),
        'attention': lambda: dispatch.run_attention(qk, x, (8, 8), 1, backend=backend),
        'expand_dwconv': lambda: dispatch.run_expand_dwconv(x, ew, eb, dw, db, (8, 8)),
    }


def entry_point_costs(backend: str = 'auto', number: int = 20000, repeat: int = 5) -> dict[str, float]:
    """µs per call of each entry point (the best of ``repeat`` runs of ``number`` calls), the ops
    stubbed out. ``backend`` 'triton' takes the path of a CUDA device's 'auto' (the kernels' own
    checks run) and needs the kernels to be able to run here (CUDA, or ``TRITON_INTERPRET=1``)."""
    if backend == 'triton':
        dispatch._triton_module()   # registers the Triton ops before torch.ops.mmmila is stubbed
    calls = _calls(backend)
    with mock.patch.object(torch.ops, 'mmmila', _StubOps()):
        return {name: min(timeit.repeat(call, number=number, repeat=repeat)) / number * 1e6
                for name, call in calls.items()}


class _OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == 'mmmila':
            self.ops[func._schema.name.split('::')[1]] += 1
        return func(*args, **(kwargs or {}))


def op_calls_per_forward(model: nn.Module, size: int = 64) -> Counter:
    """Calls of each entry point in one eval-mode forward of ``model`` at ``size`` x ``size``."""
    model.eval()
    counter = _OpCounter()
    with torch.inference_mode(), counter:
        model(torch.zeros(1, 3, size, size))
    op_to_entry = {op: entry for entry, ops in ENTRY_POINTS.items() for op in ops}
    return Counter({op_to_entry[op]: n for op, n in counter.ops.items() if op in op_to_entry})


def per_forward_ms(costs: dict[str, float], calls: Counter) -> float:
    """The dispatch layer's host time in one forward: Σ calls x µs per call, in ms."""
    return sum(costs[name] * n for name, n in calls.items()) / 1e3


def dispatch_table(name: str, calls: Counter, costs: dict[str, dict[str, float]]) -> str:
    """A Markdown table: calls per forward and µs per call of each entry point, a column per backend."""
    backends = list(costs)
    columns = ' | '.join(f'µs per call ({b})' for b in backends)
    out = [f'| {name}: entry point | calls per forward | {columns} |', '|---|---|' + '---|' * len(backends)]
    for entry in ENTRY_POINTS:
        out.append(f'| {entry} | {calls.get(entry, 0)} | '
                   + ' | '.join(f'{costs[b][entry]:.1f}' for b in backends) + ' |')
    out.append('| **per forward** | ' + str(sum(calls.values())) + ' | '
               + ' | '.join(f'**{per_forward_ms(costs[b], calls):.2f} ms**' for b in backends) + ' |')
    return '\n'.join(out)
