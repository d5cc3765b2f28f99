"""Timing of calls: interleaved rounds of several calls (the benchmarks), and the median of one
call (the GPU kit: ``triton.testing.do_bench`` on CUDA)."""
from __future__ import annotations

import random
import statistics
import time
from typing import Callable, Hashable

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on CPU."""
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)


def time_interleaved(steps: dict[Hashable, Callable[[], object]], device: torch.device, repeats: int,
                     min_time: float = 0.0, max_repeats: int | None = None,
                     rng: random.Random | None = None) -> dict[Hashable, tuple[list[float], list[float]]]:
    """Wall and process-CPU times (s) of ``steps`` (key -> call) measured in interleaved rounds.

    Every round calls each step once, in a shuffled order (``rng``, default ``random.Random(0)``),
    so that all of them share the machine's load of the moment and none always follows the same one.
    Rounds go on until each step has at least ``repeats`` calls and ``min_time`` wall seconds, at
    most ``max_repeats`` rounds (default ``repeats``). Each call is synchronised with the device.
    Returns key -> (wall times, CPU times).
    """
    max_repeats = repeats if max_repeats is None else max_repeats
    if repeats < 1 or max_repeats < repeats:
        raise ValueError(f'need 1 <= repeats <= max_repeats, got {repeats} and {max_repeats}')
    rng = rng or random.Random(0)
    times = {k: ([], []) for k in steps}
    rounds = 0
    while rounds < repeats or (rounds < max_repeats and min(sum(w) for w, _ in times.values()) < min_time):
        order = list(steps)
        rng.shuffle(order)
        for key in order:
            wall, cpu = times[key]
            sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            steps[key]()
            sync(device)
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        rounds += 1
    return times


def first_call_s(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of one call (a warm-up; under torch.compile: the compilation)."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def median_ms(fn: Callable[[], object], device: torch.device, cpu_calls: int = 5, cpu_warmup: bool = True,
              rep_ms: int = 200, warmup_ms: int = 50, grad_to_none=None) -> float:
    """Median time of ``fn()`` in ms, warm-up excluded.

    CUDA: ``triton.testing.do_bench`` (``warmup_ms`` of warm-up, ``rep_ms`` of calls, the L2 cache
    flushed before each). CPU: one untimed call (``cpu_warmup``), then the median of ``cpu_calls``
    ``time.perf_counter`` calls. ``grad_to_none``: tensors whose ``.grad`` is reset before each call.
    """
    if torch.device(device).type == 'cuda':
        from triton.testing import do_bench
        return float(do_bench(fn, warmup=warmup_ms, rep=rep_ms, grad_to_none=grad_to_none,
                              return_mode='median'))
    if cpu_warmup:
        fn()
    times = []
    for _ in range(cpu_calls):
        for t in grad_to_none or ():
            t.grad = None
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)
