"""Peak memory of one call: the one definition that every benchmark and the GPU kit report.

:func:`peak_memory` runs a call once and returns the peak of the *live tensor memory* during it,
above what was live before it (outputs, gradients and temporaries included; memory the call frees
before it returns counts at its peak). On CUDA that is ``torch.cuda.max_memory_allocated`` above
``torch.cuda.memory_allocated`` before the call; on CPU it is the running sum of every tensor
allocation and free that ``torch.profiler`` records (``profile_memory``), the CPU analogue of the
CUDA figure: exact, and independent of how the C allocator keeps or returns pages (a figure of
resident memory, e.g. VmHWM, depends on both). On CUDA the device's total peak is given too.

:func:`peak_memory_in_fresh_process` measures a call in a new interpreter, so that what earlier
calls left in the allocator or the heap does not blur the figure (``python -m mmmila.bench.memory``
is that child).
"""
from __future__ import annotations

import gc
import importlib
import json
import subprocess
import sys
from typing import Callable, NamedTuple

import torch


class MemoryPeak(NamedTuple):
    """Bytes. ``above_start``: the peak of live tensor memory during the call above what was live
    before it (None where the profiler's result cannot be read). ``total``: the device's peak of all
    allocated memory during the call, what was there before included (CUDA only; None on CPU, where
    the profiler sees only what the call itself allocates)."""
    above_start: int | None
    total: int | None


def peak_memory(fn: Callable[[], object], device: torch.device) -> MemoryPeak:
    """Run ``fn()`` once and return its :class:`MemoryPeak` (see the module's docstring)."""
    device = torch.device(device)
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return MemoryPeak(peak - base, peak)
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    try:
        events = prof.profiler.kineto_results.events()
    except AttributeError:  # the profiler's result layout changed: no figure rather than a wrong one
        return MemoryPeak(None, None)
    cpu = torch.autograd.DeviceType.CPU
    changes = sorted((e.start_ns(), e.nbytes()) for e in events
                     if e.name() == '[memory]' and e.device_type() == cpu)
    live = peak = 0
    for _, nbytes in changes:
        live += nbytes
        peak = max(peak, live)
    return MemoryPeak(peak, None)


def peak_memory_in_fresh_process(make_step: str, threads: int | None = None, **kwargs) -> int | None:
    """:attr:`MemoryPeak.above_start` of one call, measured in a new interpreter.

    Args:
        make_step (str): ``'module:function'``; ``function(**kwargs)`` builds what is measured, does
            any warm-up it needs (one-off allocations such as caches are not the call's working
            set) and returns the call. ``kwargs`` must hold ``device`` and be JSON-serialisable.
        threads (int, optional): ``torch.set_num_threads`` in the child.
    """
    if 'device' not in kwargs:
        raise ValueError('peak_memory_in_fresh_process needs device=...')
    job = json.dumps(dict(make_step=make_step, threads=threads, kwargs=kwargs))
    res = subprocess.run([sys.executable, '-m', 'mmmila.bench.memory', job], capture_output=True, text=True,
                         check=False)
    if res.returncode != 0:
        raise RuntimeError(f'the memory measurement {make_step}({kwargs}) failed:\n{res.stderr[-2000:]}')
    value = json.loads(res.stdout.strip().splitlines()[-1])['peak_bytes']
    return None if value is None else int(value)


def _child(job: str) -> None:
    """The child of :func:`peak_memory_in_fresh_process`: build, measure, print one JSON line."""
    job = json.loads(job)
    if job['threads']:
        torch.set_num_threads(job['threads'])
    module, _, name = job['make_step'].partition(':')
    step = getattr(importlib.import_module(module), name)(**job['kwargs'])
    peak = peak_memory(step, torch.device(job['kwargs']['device']))
    print(json.dumps(dict(peak_bytes=peak.above_start)))


if __name__ == '__main__':
    _child(sys.argv[1])
