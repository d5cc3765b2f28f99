"""What mmmila's compiled CPU kernels (:mod:`mmmila.ops.cpu_kernels`) save in a training step.

The calls of ``torch.ops.mmmila.dwconv_tokens`` in one forward of a backbone are recorded (their
shapes and options); each distinct call then runs forward and backward with the compiled kernels
(``torch.ops.mmmila_cpu``) and with the PyTorch implementation (:func:`mmmila.ops.dwconv.dwconv_forward`
and ``dwconv_backward``) on the same inputs, in interleaved rounds (each round times both, in
alternating order, so that both share the machine's state of the moment). Reported: the median µs of
each, per call and summed over a step's calls.
"""
from __future__ import annotations

import time
from collections import Counter
from statistics import median
from typing import NamedTuple

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

from mmmila.ops.dwconv import dwconv_backward, dwconv_forward


class DwconvCall(NamedTuple):
    """One kind of ``dwconv_tokens`` call: tokens (B, N, C) of an (H, W) map and the op's options."""
    B: int
    H: int
    W: int
    C: int
    residual: bool
    gate: bool
    skip: bool
    act: str

    @property
    def use(self) -> str:
        parts = (['skip'] if self.skip else []) + ([self.act] if self.act != 'none' else []) \
            + (['residual'] if self.residual else []) + (['gate'] if self.gate else [])
        return '+'.join(parts) or 'plain'


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.mmmila.dwconv_tokens.default:
            x, _, _, H, W, residual, gate, skip, act = args
            self.calls[DwconvCall(x.shape[0], H, W, x.shape[2], residual is not None, gate is not None,
                                  skip, act)] += 1
        return func(*args, **(kwargs or {}))


def dwconv_calls(model: nn.Module, size: int, batch: int = 1) -> Counter:
    """The ``dwconv_tokens`` calls of one forward of ``model`` on a (batch, 3, size, size) input,
    counted by kind (:class:`DwconvCall`); a training step makes each once more in backward."""
    recorder = _Recorder()
    with torch.no_grad(), recorder:
        model(torch.zeros(batch, 3, size, size))
    return recorder.calls


def _inputs(call: DwconvCall, seed: int = 0) -> tuple:
    gen = torch.Generator().manual_seed(seed)
    shape = (call.B, call.H * call.W, call.C)

    def rand(*s):
        return torch.randn(*s, generator=gen)

    x, grad = rand(*shape), rand(*shape)
    residual, gate = (rand(*shape) if call.residual else None), (rand(*shape) if call.gate else None)
    return x, rand(call.C, 1, 3, 3) * 0.3, rand(call.C) * 0.1, residual, gate, grad


def time_call(call: DwconvCall, rounds: int = 7, number: int = 3) -> dict[str, float]:
    """Median µs of a forward + backward of ``call``: {'pytorch': ..., 'compiled': ...}, interleaved
    rounds of ``number`` calls each. The compiled kernels must be built."""
    x, w, b, residual, gate, grad = _inputs(call)
    hw, silu = (call.H, call.W), call.act == 'silu'
    ops = torch.ops.mmmila_cpu

    def pytorch():
        args = (x, w, b, hw, residual, gate, call.skip, call.act)
        dwconv_forward(*args)
        dwconv_backward(grad, *args)

    def compiled():
        ops.dwconv_tokens(x, w, b, call.H, call.W, residual, gate, call.skip, silu)
        ops.dwconv_tokens_backward(grad, x, w, b, call.H, call.W, residual, gate, call.skip, silu)

    paths = {'pytorch': pytorch, 'compiled': compiled}
    for fn in paths.values():   # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in paths}
    for r in range(rounds):
        for name in (list(paths) if r % 2 == 0 else list(paths)[::-1]):
            start = time.perf_counter()
            for _ in range(number):
                paths[name]()
            times[name].append((time.perf_counter() - start) / number * 1e6)
    return {name: median(t) for name, t in times.items()}


def step_table(label: str, size: int, calls: Counter, timings: dict[DwconvCall, dict[str, float]]) -> str:
    """A Markdown table: each kind of call, its count per step and µs per forward + backward with each
    path; the last row sums a step (count x µs) and gives the ratio."""
    out = [f'| {label}, {size}²: dwconv_tokens call (B, H×W, C, use) | calls per step | PyTorch µs '
           '(fwd+bwd) | compiled µs | PyTorch / compiled |', '|---|---|---|---|---|']
    total = {'pytorch': 0.0, 'compiled': 0.0}
    for call, n in sorted(calls.items(), key=lambda kv: (-kv[0].H * kv[0].W, kv[0].use)):
        t = timings[call]
        for k in total:
            total[k] += n * t[k]
        out.append(f'| {call.B}, {call.H}×{call.W}, {call.C}, {call.use} | {n} | {t["pytorch"]:.0f} | '
                   f'{t["compiled"]:.0f} | {t["pytorch"] / t["compiled"]:.2f}x |')
    out.append(f'| **per training step** | {sum(calls.values())} | **{total["pytorch"] / 1e3:.1f} ms** | '
               f'**{total["compiled"] / 1e3:.1f} ms** | **{total["pytorch"] / total["compiled"]:.2f}x** |')
    return '\n'.join(out)
