"""What mmmila's compiled CPU kernels (:mod:`mmmila.ops.cpu_kernels`) save in a training step.

The calls of the ops that have compiled CPU kernels (``torch.ops.mmmila.dwconv_tokens``, the
Downsample's ``expand_dwconv``, the attention's ``linear_attention``,
and the MLP's ``gelu_linear``, whose GELU gradient is) in one forward of a backbone are recorded
(their shapes and options); each distinct call then runs forward and backward with the compiled
kernels and with the PyTorch implementation on the same inputs, in interleaved rounds (each round
times both, in alternating order, so that both share the machine's state of the moment). Reported:
the median µs of each, per call and summed over a step's calls.
"""
from __future__ import annotations

import time
from collections import Counter
from statistics import median
from typing import NamedTuple

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

from mmmila.ops import cpu_fused, downsample, linear_chains
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

    @property
    def label(self) -> str:
        return f'dwconv_tokens ({self.B}, {self.H}×{self.W}, {self.C}), {self.use}'

    def paths(self, seed: int = 0) -> dict:
        """{'pytorch': forward + backward by PyTorch ops, 'compiled': by the compiled kernels}."""
        x, w, b, residual, gate, grad = _inputs(self, seed)
        hw, silu, ops = (self.H, self.W), self.act == 'silu', torch.ops.mmmila_cpu

        def pytorch():
            args = (x, w, b, hw, residual, gate, self.skip, self.act)
            dwconv_forward(*args)
            dwconv_backward(grad, *args)

        def compiled():
            ops.dwconv_tokens(x, w, b, self.H, self.W, residual, gate, self.skip, silu)
            ops.dwconv_tokens_backward(grad, x, w, b, self.H, self.W, residual, gate, self.skip, silu)

        return {'pytorch': pytorch, 'compiled': compiled}


class DownsampleCall(NamedTuple):
    """One kind of ``expand_dwconv`` call: tokens (B, H W, C) expanded to ``hidden`` channels."""
    B: int
    H: int
    W: int
    C: int
    hidden: int

    @property
    def label(self) -> str:
        return f'expand_dwconv ({self.B}, {self.H}×{self.W}, {self.C} → {self.hidden})'

    def paths(self, seed: int = 0) -> dict:
        """Forward + backward with each way of computing a chunk (the same chunks)."""
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(self.B, self.H * self.W, self.C, generator=gen)
        ew = torch.randn(self.hidden, self.C, generator=gen) * self.C ** -0.5
        eb, db = torch.randn(self.hidden, generator=gen) * 0.1, torch.randn(self.hidden, generator=gen) * 0.1
        dw = torch.randn(self.hidden, 1, 3, 3, generator=gen) * 0.3
        grad = torch.randn(self.B, self.H * self.W // 4, self.hidden, generator=gen)
        hw = (self.H, self.W)

        def run(kernels):
            downsample.expand_dwconv_forward(x, ew, eb, dw, db, hw, kernels)
            downsample.expand_dwconv_backward(grad, x, ew, eb, dw, db, hw, kernels)

        return {'pytorch': lambda: run(downsample.PYTORCH_ROWS),
                'compiled': lambda: run(downsample.COMPILED_ROWS)}


class AttentionCall(NamedTuple):
    """One kind of ``linear_attention`` call: qk (B, H W, 2C) and v (B, H W, C), ``heads`` heads."""
    B: int
    H: int
    W: int
    C: int
    heads: int

    @property
    def label(self) -> str:
        return f'linear_attention ({self.B}, {self.H}×{self.W}, {self.C}), {self.heads} heads'

    def paths(self, seed: int = 0) -> dict:
        """Forward + backward with the feature map by PyTorch ops or by the compiled kernel."""
        gen = torch.Generator().manual_seed(seed)
        qk = torch.randn(self.B, self.H * self.W, 2 * self.C, generator=gen)
        v, grad = (torch.randn(self.B, self.H * self.W, self.C, generator=gen) for _ in range(2))
        hw = (self.H, self.W)

        def run(compiled):
            _, s, m = cpu_fused.attention_forward(qk, v, hw, self.heads, compiled)
            cpu_fused.attention_backward(grad, None, None, qk, v, s, m, hw, self.heads, compiled)

        return {'pytorch': lambda: run(False), 'compiled': lambda: run(True)}


class GeluLinearCall(NamedTuple):
    """One kind of ``gelu_linear`` call: h (B, N, hidden) into ``out`` features."""
    B: int
    N: int
    hidden: int
    out: int

    @property
    def label(self) -> str:
        return f'gelu_linear ({self.B}, {self.N}, {self.hidden} → {self.out})'

    def paths(self, seed: int = 0) -> dict:
        """Forward (the same either way) + backward with GELU's gradient by PyTorch ops or compiled."""
        gen = torch.Generator().manual_seed(seed)
        h = torch.randn(self.B, self.N, self.hidden, generator=gen)
        w = torch.randn(self.out, self.hidden, generator=gen) * self.hidden ** -0.5
        b, grad = torch.randn(self.out, generator=gen), torch.randn(self.B, self.N, self.out, generator=gen)

        def run(compiled):
            linear_chains.gelu_linear_op(h, w, b)
            linear_chains.gelu_linear_backward(grad, h, w, b, compiled)

        return {'pytorch': lambda: run(False), 'compiled': lambda: run(True)}


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.mmmila.dwconv_tokens.default:
            x, _, _, H, W, residual, gate, skip, act = args
            self.calls[DwconvCall(x.shape[0], H, W, x.shape[2], residual is not None, gate is not None,
                                  skip, act)] += 1
        elif func is torch.ops.mmmila.expand_dwconv.default:
            x, expand_weight, _, _, _, H, W = args
            self.calls[DownsampleCall(x.shape[0], H, W, x.shape[2], expand_weight.shape[0])] += 1
        elif func is torch.ops.mmmila.linear_attention.default:
            _, v, H, W, heads = args
            self.calls[AttentionCall(v.shape[0], H, W, v.shape[2], heads)] += 1
        elif func is torch.ops.mmmila.gelu_linear.default:
            h, weight, _ = args
            self.calls[GeluLinearCall(h.shape[0], h.shape[1], h.shape[2], weight.shape[0])] += 1
        return func(*args, **(kwargs or {}))


def op_calls(model: nn.Module, size: int, batch: int = 1) -> Counter:
    """The calls of the ops with compiled CPU kernels in one forward of ``model`` on a (batch, 3, size,
    size) input, counted by kind (:class:`DwconvCall`, :class:`DownsampleCall`, :class:`AttentionCall`,
    :class:`GeluLinearCall`); a training step makes each once more in backward."""
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


def time_call(call, rounds: int = 7, number: int = 3) -> dict[str, float]:
    """Median µs of a forward + backward of ``call``: {'pytorch': ..., 'compiled': ...}, interleaved
    rounds of ``number`` calls each. The compiled kernels must be built."""
    paths = call.paths()
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


def step_table(label: str, size: int, calls: Counter, timings: dict) -> str:
    """A Markdown table: each kind of call, its count per step and µs per forward + backward with each
    path; the last row sums a step (count x µs) and gives the ratio."""
    out = [f'| {label}, {size}²: op call (B, H×W, C) | calls per step | PyTorch µs (fwd+bwd) | '
           'compiled µs | PyTorch / compiled |', '|---|---|---|---|---|']
    total = {'pytorch': 0.0, 'compiled': 0.0}
    for call, n in sorted(calls.items(), key=lambda kv: (type(kv[0]).__name__, kv[0].label)):
        t = timings[call]
        for k in total:
            total[k] += n * t[k]
        out.append(f'| {call.label} | {n} | {t["pytorch"]:.0f} | {t["compiled"]:.0f} | '
                   f'{t["pytorch"] / t["compiled"]:.2f}x |')
    out.append(f'| **per training step** | {sum(calls.values())} | **{total["pytorch"] / 1e3:.1f} ms** | '
               f'**{total["compiled"] / 1e3:.1f} ms** | **{total["pytorch"] / total["compiled"]:.2f}x** |')
    return '\n'.join(out)
