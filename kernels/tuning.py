"""The launch configuration of each call: cached per problem, autotuned on request.

:func:`config_for` is what the op's launchers call. In eager mode it looks the problem up in a
dict keyed by (pass, N, B * nh, d, dtype, device, num_chunks) and computes the
:class:`~.heuristics.LaunchConfig` only the first time, so a call of a known shape costs one dict
lookup on the host. While a graph is captured (torch.compile, fake tensors) sizes may be symbolic
and nothing is cached: the default configuration is computed from the traced sizes.

Autotuning: with ``MMMILA_AUTOTUNE=1`` in the environment, on CUDA and in eager mode, the first
call of a shape times the pass (``triton.testing.do_bench``) with the reasoned defaults, then
changes one field of :class:`~.heuristics.BlockParams` at a time over
:data:`~.heuristics.TUNING_SPACE`, keeping each change that is faster; the winner is cached for
that shape (11 timings per pass, each a compilation of the candidate and ~30 ms of calls). A
candidate that fails to compile or run is passed over. Off by default: the defaults need no warm-up
and give the same configuration in every process.
"""
from __future__ import annotations

import os
from typing import Callable

import torch

from mmmila.ops.capture import capturing_graph

from .heuristics import TUNING_SPACE, BlockParams, LaunchConfig, default_params, launch_config, neighbours

ENV_VAR = 'MMMILA_AUTOTUNE'
_configs: dict = {}
_tuned: dict = {}


def autotune_requested(device: torch.device) -> bool:
    """Whether the first call of a shape on ``device`` is autotuned (``MMMILA_AUTOTUNE=1``, CUDA)."""
    return device.type == 'cuda' and os.environ.get(ENV_VAR, '').strip() not in ('', '0')


def bench_ms(fn: Callable[[], object], warmup_ms: int = 5, rep_ms: int = 25) -> float:
    """Median ms of ``fn()`` by ``triton.testing.do_bench`` (CUDA)."""
    from triton.testing import do_bench
    return float(do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode='median'))


def tune(time_of: Callable[[BlockParams], float], start: BlockParams) -> tuple[BlockParams, float]:
    """The fastest :class:`BlockParams` found from ``start`` changing one field at a time over
    :data:`TUNING_SPACE` (each field in turn, keeping a change that is faster), and its time.

    ``time_of(params)`` is the time of the pass with ``params``. A candidate that fails (e.g. it
    needs more shared memory than the GPU has) is passed over; ``start`` must run.
    """
    def time_or_inf(params):
        try:
            return time_of(params)
        except Exception:  # noqa: BLE001  (triton's OutOfResources, a compilation error: not a choice)
            return float('inf')
    best, best_ms = start, time_of(start)
    for field in TUNING_SPACE:
        timed = best
        for params in neighbours(timed, field):
            if params != timed:
                ms = time_or_inf(params)
                if ms < best_ms:
                    best, best_ms = params, ms
    return best, best_ms


def config_for(kind: str, qk: torch.Tensor, v: torch.Tensor, num_heads: int, num_chunks: int | None,
               run: Callable[[LaunchConfig], object] | None = None) -> LaunchConfig:
    """The :class:`LaunchConfig` of the ``kind`` pass ('fwd' or 'bwd') of this call.

    Args:
        kind (str): 'fwd' or 'bwd'.
        qk (Tensor): (B, N, 2C).
        v (Tensor): (B, N, C).
        num_heads (int): nh.
        num_chunks (int, optional): forced reduction chunks (tests), else the heuristics'.
        run (callable, optional): ``run(cfg)`` launches the pass with ``cfg``; used to autotune.
    """
    B, N, C = v.shape
    problem = (N, B * num_heads, C // num_heads, qk.dtype, qk.device, num_chunks)
    if capturing_graph():
        return launch_config(*problem, kind=kind)
    key = (kind, *problem)
    cfg = _configs.get(key)
    if cfg is None:
        params = default_params(kind, qk.dtype)
        if run is not None and autotune_requested(qk.device):
            params, _ = tune(lambda p: bench_ms(lambda: run(launch_config(*problem, kind=kind, params=p))),
                             params)
            _tuned[key] = params
        cfg = _configs[key] = launch_config(*problem, kind=kind, params=params)
    return cfg


def tuned_choices() -> dict:
    """{(pass, N, B * nh, d, dtype, device, num_chunks): BlockParams} chosen by autotuning so far."""
    return dict(_tuned)


def clear_cache() -> None:
    """Forget every cached configuration and tuning result (the next call of each shape recomputes)."""
    _configs.clear()
    _tuned.clear()
