#!/usr/bin/env python
"""Speed and memory of whole backbones (or models from configs) over input sizes, side by side.

    # MILA-T beside mmpretrain's Swin-T and ConvNeXt-T, dense-prediction backbones, 224^2 ... 1024^2
    # (the command of docs/benchmark_models.md):
    python tools/benchmark.py mila-t swin-t convnext-t --sizes 224 512 1024 \\
        --backward-sizes 224 512 1024 --threads 1 --time cpu --repeats 3 --min-time 0 \\
        --max-repeats 3 --out docs/benchmark_scaling --markdown docs/benchmark_models.md
    # a model from a config (classifier logits, detector / segmentor tensor mode):
    python tools/benchmark.py --config configs/mila_t_in1k.py --sizes 224 --modes forward

For each input size and mode (``forward``: eval mode under ``torch.inference_mode``;
``forward+backward``: train mode, forward, mean of every output, backward) all models are built
side by side in one process; each runs untimed warm-up calls, then the timed calls run in
interleaved rounds -- every round calls each model once, in a shuffled order, so that one model
does not get a quiet minute and another a busy one -- at least ``--repeats`` rounds and at least
``--min-time`` seconds per model, at most ``--max-repeats``. It reports the median latency, its
interquartile range, throughput (batch / median) and time per megapixel, the median process CPU
time of the same calls, the first model's speed and memory relative to each other model, and the
peak tensor memory of one call above what was allocated before it, measured for each model, size
and mode in a fresh process (after one warm-up call there): on CUDA
``torch.cuda.max_memory_allocated``, on CPU the running sum of the tensor allocations and frees
that ``torch.profiler`` records (so it does not depend on how malloc keeps or returns pages).
On a CPU shared with other jobs, wall time depends on the load; with ``--threads 1`` the process
CPU time measures the work itself, and ``--time cpu`` plots it. Device: the one given (default:
CUDA if available, else CPU).

``--out PREFIX`` writes ``PREFIX.csv`` (every measurement), ``PREFIX.png`` (time, memory and time
per pixel against pixels, log-log) and a Markdown report (tables, machine, command and date) to
``--markdown PATH`` (default ``PREFIX.md``).
"""
from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from mmmila.bench.machine import machine_info
from mmmila.bench.models import BACKBONES, LABELS, build_backbone, build_from_config

MODES = ('forward', 'forward+backward')


@dataclass
class Result:
    model: str
    size: int
    mode: str
    batch: int
    median_ms: float
    q1_ms: float
    q3_ms: float
    cpu_ms: float
    repeats: int
    images_per_s: float
    ms_per_megapixel: float
    cpu_ms_per_megapixel: float
    peak_mem_mb: float | None
    first_call_s: float | None = None    # the first warm-up call (under torch.compile: the compilation)

    @property
    def megapixels(self) -> float:
        return self.batch * self.size * self.size / 1e6


# ---- models --------------------------------------------------------------------------------
def _tensors(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return []


def make_step(model: nn.Module, x: torch.Tensor, mode: str) -> Callable[[], None]:
    """One call of ``model`` in ``mode`` on input ``x``."""
    if mode == 'forward':
        model.eval()

        def step():
            with torch.inference_mode():
                model(x)
        return step
    if mode != 'forward+backward':
        raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
    model.train()

    def step():
        model.zero_grad(set_to_none=True)
        outs = _tensors(model(x))
        sum(o.float().mean() for o in outs if o.is_floating_point()).backward()
    return step


# ---- measuring -------------------------------------------------------------------------------
def peak_memory(fn: Callable[[], None], device: torch.device) -> int | None:
    """Run ``fn`` once; return the peak of its live tensor memory above what was live before (bytes).

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the running sum of every tensor allocation and
    free that ``torch.profiler`` records (``profile_memory``), the CPU analogue of the CUDA figure:
    exact and independent of how the C allocator reuses or returns pages. None if unavailable.
    """
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    try:
        events = prof.profiler.kineto_results.events()
    except AttributeError:  # the profiler's result layout changed: no figure rather than a wrong one
        return None
    cpu = torch.autograd.DeviceType.CPU
    changes = sorted((e.start_ns(), e.nbytes()) for e in events
                     if e.name() == '[memory]' and e.device_type() == cpu)
    live = peak = 0
    for _, nbytes in changes:
        live += nbytes
        peak = max(peak, live)
    return peak


def time_calls(fn: Callable[[], None], device: torch.device, repeats: int, min_time: float,
               max_repeats: int) -> tuple[list[float], list[float]]:
    """Wall and process-CPU times (s) of calls of ``fn``: at least ``repeats`` calls and ``min_time``
    wall seconds, at most ``max_repeats`` calls."""
    if repeats < 1 or max_repeats < repeats:
        raise ValueError(f'need 1 <= repeats <= max_repeats, got {repeats} and {max_repeats}')
    wall: list[float] = []
    cpu: list[float] = []
    while len(wall) < repeats or (sum(wall) < min_time and len(wall) < max_repeats):
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def summarise(model: str, size: int, mode: str, batch: int, times: list[float], peak_bytes: int | None,
              cpu_times: list[float] | None = None) -> Result:
    """A :class:`Result` from the call times (wall: median and quartiles; process CPU: median) and
    the peak memory."""
    if not times:
        raise ValueError('no timed calls')
    med = statistics.median(times)
    q1, _, q3 = statistics.quantiles(times, n=4, method='inclusive') if len(times) > 1 else (med, med, med)
    cpu = statistics.median(cpu_times) if cpu_times else float('nan')
    pixels = batch * size * size / 1e6
    return Result(model=model, size=size, mode=mode, batch=batch, median_ms=med * 1e3, q1_ms=q1 * 1e3,
                  q3_ms=q3 * 1e3, cpu_ms=cpu * 1e3, repeats=len(times), images_per_s=batch / med,
                  ms_per_megapixel=med * 1e3 / pixels, cpu_ms_per_megapixel=cpu * 1e3 / pixels,
                  peak_mem_mb=None if peak_bytes is None else peak_bytes / 2**20)


def time_interleaved(steps: dict, device: torch.device, repeats: int, min_time: float,
                     max_repeats: int, rng: random.Random | None = None) -> dict:
    """Wall and process-CPU times (s) of ``steps`` (key -> call) measured in interleaved rounds.

    Every round calls each step once, in a shuffled order, so that all of them share the machine's
    load of the moment and none always follows the same one. Rounds go on until each step has at
    least ``repeats`` calls and ``min_time`` wall seconds, at most ``max_repeats`` rounds.
    Returns key -> (wall times, CPU times).
    """
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
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            steps[key]()
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        rounds += 1
    return times


def benchmark_models(jobs: list, sizes: list[int], modes: list[str], batch: int, device: torch.device,
                     warmup: int, repeats: int, min_time: float, max_repeats: int,
                     log: Callable[[str], None] = print, backward_sizes: list[int] | None = None,
                     memory: Callable[[str, int, str], int | None] | None = None) -> list[Result]:
    """Measure models side by side: for each size and mode, ``warmup`` untimed calls each, then
    :func:`time_interleaved` rounds over all of them (``forward+backward`` only at
    ``backward_sizes`` when given).

    Args:
        jobs (list): (name, factory) pairs; ``factory(size)`` builds the model.
        memory (callable): ``memory(name, size, mode)`` -> peak bytes of one call, e.g. measured in
            a fresh process (:func:`peak_memory_in_subprocess`); default: :func:`peak_memory` of
            the first warm-up call in this process.
    """
    if warmup < 1:
        raise ValueError('at least one warm-up call is needed')
    results = []
    for size in sizes:
        models = {name: factory(size).to(device) for name, factory in jobs}
        x = torch.rand(batch, 3, size, size, device=device)
        for mode in modes:
            if mode == 'forward+backward' and backward_sizes is not None and size not in backward_sizes:
                continue
            steps, peaks, first = {}, {}, {}
            for name, model in models.items():
                steps[name] = step = make_step(model, x, mode)
                peaks[name] = memory(name, size, mode) if memory else None
                if device.type == 'cuda':
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                if memory:
                    step()
                else:
                    peaks[name] = peak_memory(step, device)
                if device.type == 'cuda':
                    torch.cuda.synchronize(device)
                first[name] = time.perf_counter() - start
                for _ in range(warmup - 1):
                    step()
            times = time_interleaved(steps, device, repeats, min_time, max_repeats)
            for name in steps:
                res = summarise(name, size, mode, batch, *times[name][:1], peaks[name], times[name][1])
                res.first_call_s = first[name]
                log(f'{name:12s} {size:5d}^2 {mode:17s} {res.median_ms:10.1f} ms (IQR {res.q1_ms:.1f}-'
                    f'{res.q3_ms:.1f}, n={res.repeats}), CPU {res.cpu_ms:10.1f} ms  '
                    f'peak {res.peak_mem_mb if res.peak_mem_mb is None else round(res.peak_mem_mb)} MB  '
                    f'first call {first[name]:.1f} s')
                results.append(res)
            del steps
        del models, x
        gc.collect()
    return results


def benchmark(name: str, factory: Callable[[int], nn.Module], sizes: list[int], modes: list[str],
              batch: int, device: torch.device, warmup: int, repeats: int, min_time: float,
              max_repeats: int, log: Callable[[str], None] = print,
              backward_sizes: list[int] | None = None) -> list[Result]:
    """One model alone (see :func:`benchmark_models`); its memory measured in this process."""
    return benchmark_models([(name, factory)], sizes, modes, batch, device, warmup, repeats, min_time,
                            max_repeats, log, backward_sizes)


def peak_memory_in_subprocess(spec: str, size: int, mode: str, batch: int, device: torch.device,
                              threads: int | None) -> int | None:
    """Peak memory of one call of a model (a backbone name or a config path) in a fresh process,
    so that what earlier models left in the allocator or the heap does not blur the figure."""
    cmd = [sys.executable, str(Path(__file__).resolve()), '--peak-memory-of', spec, '--sizes', str(size),
           '--modes', mode, '--batch', str(batch), '--device', str(device)]
    if threads:
        cmd += ['--threads', str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f'the memory measurement of {spec} at {size} ({mode}) failed:\n{out.stderr[-2000:]}')
    value = json.loads(out.stdout.strip().splitlines()[-1])['peak_bytes']
    return None if value is None else int(value)


def _print_peak_memory(spec: str, size: int, mode: str, batch: int, device: torch.device) -> None:
    """The child of :func:`peak_memory_in_subprocess`: one warm-up call, then the measured one."""
    torch.manual_seed(0)
    factory = build_from_config(spec, batch) if spec.endswith('.py') else lambda _: build_backbone(spec)
    step = make_step(factory(size).to(device), torch.rand(batch, 3, size, size, device=device), mode)
    step()   # the first call's one-off allocations (caches, tables) are not the model's working set
    print(json.dumps(dict(peak_bytes=peak_memory(step, device))))


# ---- reporting -------------------------------------------------------------------------------
COMPILED = ' (compiled)'   # suffix of a model measured under torch.compile (--engine)


def label(model: str) -> str:
    """The display name of a model key: 'mila-t (compiled)' -> 'MILA-T (compiled)'."""
    base = model[:-len(COMPILED)] if model.endswith(COMPILED) else model
    return LABELS.get(base, base) + model[len(base):]


def write_csv(results: list[Result], path: Path) -> None:
    names = [f.name for f in fields(Result)]
    lines = [','.join(names + ['megapixels'])]
    for r in results:
        row = asdict(r)
        cells = ['' if row[n] is None else f'{row[n]:.4g}' if isinstance(row[n], float) else str(row[n])
                 for n in names]
        lines.append(','.join(cells) + f',{r.megapixels:.4g}')
    path.write_text('\n'.join(lines) + '\n')


def _per_pixel(r: Result, metric: str) -> float:
    return r.cpu_ms_per_megapixel if metric == 'cpu' else r.ms_per_megapixel


def markdown_tables(results: list[Result], metric: str = 'wall') -> str:
    """Per mode: a table of median wall ms, median CPU ms and peak MB, and one of ms per megapixel
    (``metric``: 'wall' or 'cpu' time), a row per size and a column per model."""
    models = list(dict.fromkeys(r.model for r in results))
    header = '| size | ' + ' | '.join(label(m) for m in models) + ' |\n|---|' + '---|' * len(models)
    out = []
    for mode in dict.fromkeys(r.mode for r in results):
        rows = {(r.model, r.size): r for r in results if r.mode == mode}
        sizes = sorted({s for _, s in rows})
        mem = {k: '–' if r.peak_mem_mb is None else f'{r.peak_mem_mb:,.0f}' for k, r in rows.items()}
        def cell(m, s, per_pixel=False):
            if (m, s) not in rows:
                return '–'
            r = rows[m, s]
            if per_pixel:
                return f'{_per_pixel(r, metric):,.0f}'
            return f'{r.median_ms:,.0f} · {r.cpu_ms:,.0f} · {mem[m, s]}'

        out += [f'**{mode}**, batch {results[0].batch}: median wall ms · median CPU ms · peak MB', '',
                header]
        out += [f'| {s}² | ' + ' | '.join(cell(m, s) for m in models) + ' |' for s in sizes]
        out += ['', f'**{mode}**: {metric} ms per megapixel', '', header]
        out += [f'| {s}² | ' + ' | '.join(cell(m, s, True) for m in models) + ' |' for s in sizes]
        out.append('')
        if any(r.first_call_s is not None for r in rows.values()):
            out += [f'**{mode}**: first call, s (for a compiled model: its compilation)', '', header]
            out += [f'| {s}² | ' + ' | '.join('–' if (m, s) not in rows or rows[m, s].first_call_s is None
                                                else f'{rows[m, s].first_call_s:,.1f}' for m in models)
                    + ' |' for s in sizes]
            out.append('')
        # one ratio table per engine: eager models against each other, compiled ones likewise
        for group in ([m for m in models if not m.endswith(COMPILED)], [m for m in models if m.endswith(COMPILED)]):
            if len(group) > 1:
                out += ratio_table(rows, group, sizes, mode, metric)
    return '\n'.join(out)


def ratio_table(rows: dict, models: list[str], sizes: list[int], mode: str, metric: str) -> list[str]:
    """The first model's speed relative to each other model (their median time / its median time:
    above 1 means the first model is faster; both medians come from the same interleaved rounds) and
    its peak memory relative to theirs, a row per size."""
    first, others = models[0], models[1:]
    header = ('| size | ' + ' | '.join(f'speed vs {label(m)}' for m in others) + ' | '
              + ' | '.join(f'memory vs {label(m)}' for m in others) + ' |\n|---|'
              + '---|' * (2 * len(others)))

    def time_of(r):
        return r.cpu_ms if metric == 'cpu' else r.median_ms

    def cell(m, s, what):
        if (first, s) not in rows or (m, s) not in rows:
            return '–'
        a, b = rows[first, s], rows[m, s]
        if what == 'speed':
            return f'{time_of(b) / time_of(a):.2f}x'
        return '–' if a.peak_mem_mb is None or b.peak_mem_mb is None else f'{a.peak_mem_mb / b.peak_mem_mb:.2f}x'

    out = [f'**{mode}**: {label(first)} relative to the others ({metric} time; memory: peak MB ratio)', '', header]
    out += [f'| {s}² | ' + ' | '.join(cell(m, s, 'speed') for m in others) + ' | '
            + ' | '.join(cell(m, s, 'memory') for m in others) + ' |' for s in sizes]
    out.append('')
    return out


def plot(results: list[Result], path: Path, title: str, metric: str = 'wall') -> None:
    """Three log-log panels against pixels: time per call, peak memory, time per megapixel."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    styles = {'forward': '-', 'forward+backward': '--'}
    for m in dict.fromkeys(r.model for r in results):
        color = None
        for mode, style in styles.items():
            rs = sorted((r for r in results if r.model == m and r.mode == mode), key=lambda r: r.size)
            if not rs:
                continue
            px = [r.megapixels for r in rs]
            kw = dict(linestyle=style, marker='o', label=f'{LABELS.get(m, m)}, {mode}')
            times = [r.cpu_ms if metric == 'cpu' else r.median_ms for r in rs]
            line, = axes[0].plot(px, times, color=color, **kw)
            color = line.get_color()
            if all(r.peak_mem_mb is not None for r in rs):
                axes[1].plot(px, [r.peak_mem_mb for r in rs], color=color, **kw)
            axes[2].plot(px, [_per_pixel(r, metric) for r in rs], color=color, **kw)
    labels = (f'median {metric} time per call (ms)', 'peak tensor memory (MB)', f'{metric} ms per megapixel')
    for ax, ylabel in zip(axes, labels):
        ax.set_xscale('log')
        ax.set_yscale('log')
        ax.set_xlabel('input pixels (megapixels per call)')
        ax.set_ylabel(ylabel)
        ax.grid(True, which='both', alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('models', nargs='*', help=f'backbone names: {", ".join(BACKBONES)}')
    parser.add_argument('--config', action='append', default=[],
                        help='a config whose model to measure (repeatable)')
    parser.add_argument('--sizes', type=int, nargs='+', default=[224, 512, 1024], help='square input sides')
    parser.add_argument('--modes', nargs='+', choices=MODES, default=list(MODES))
    parser.add_argument('--backward-sizes', type=int, nargs='+', default=None,
                        help='sizes at which forward+backward runs (default: all --sizes)')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--warmup', type=int, default=1, help='untimed calls (the first measures memory)')
    parser.add_argument('--repeats', type=int, default=3, help='minimum timed calls')
    parser.add_argument('--min-time', type=float, default=2.0, help='minimum timed seconds per measurement')
    parser.add_argument('--max-repeats', type=int, default=30)
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch default)')
    parser.add_argument('--device', default=None, help="'cpu', 'cuda', ... (default: cuda if available)")
    parser.add_argument('--out', default=None, help='write PREFIX.csv, PREFIX.png and the Markdown report')
    parser.add_argument('--markdown', default=None, help='Markdown report path (default PREFIX.md)')
    parser.add_argument('--time', choices=('wall', 'cpu'), default='wall',
                        help='time plotted and given per megapixel: wall clock, or the process CPU time '
                        '(with --threads 1 on a shared CPU: the work done, whatever else runs)')
    parser.add_argument('--engine', choices=('eager', 'compiled', 'both'), default='eager',
                        help="eager PyTorch, torch.compile (inductor, static shapes: one compilation per "
                             "size and mode, its time in the first-call table; no memory figure), or both "
                             "(each backbone twice; ratio tables per engine)")
    parser.add_argument('--compile-backend', default='inductor',
                        help='torch.compile backend of --engine compiled/both (default: %(default)s)')
    parser.add_argument('--memory', choices=('fresh-process', 'none'), default='fresh-process',
                        help='peak memory of each model, size and mode in a fresh process (default), '
                        'or not measured (e.g. a second run at another thread count)')
    parser.add_argument('--peak-memory-of', default=None, help=argparse.SUPPRESS)  # the memory child
    args = parser.parse_args(argv)
    if args.peak_memory_of:
        return args
    if not args.models and not args.config:
        parser.error('name at least one model or pass --config')
    unknown = [m for m in args.models if m not in BACKBONES]
    if unknown:
        parser.error(f'unknown model(s) {unknown}; choose from {sorted(BACKBONES)}')
    if min(args.sizes) < 32 or args.batch < 1:
        parser.error('sizes must be >= 32 and batch >= 1')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    if args.peak_memory_of:
        _print_peak_memory(args.peak_memory_of, args.sizes[0], args.modes[0], args.batch, device)
        return 0
    torch.manual_seed(0)
    started = datetime.now(timezone.utc)
    info_before = machine_info(device)
    jobs = [(m, lambda size, m=m: build_backbone(m)) for m in args.models]
    jobs += [(Path(c).stem, build_from_config(c, args.batch)) for c in args.config]
    specs = {m: m for m in args.models} | {Path(c).stem: c for c in args.config}
    if args.engine != 'eager':
        compiled = [(name + COMPILED, lambda size, f=factory: torch.compile(f(size), dynamic=False,
                                                                            backend=args.compile_backend))
                    for name, factory in jobs]
        jobs = compiled if args.engine == 'compiled' else [j for pair in zip(jobs, compiled) for j in pair]
        # several sizes and modes per model, each a static compilation
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)

    def memory(name, size, mode):
        if args.memory == 'none' or name.endswith(COMPILED):   # a fresh process would compile anew
            return None
        return peak_memory_in_subprocess(specs[name], size, mode, args.batch, device, args.threads)

    results = benchmark_models(jobs, args.sizes, args.modes, args.batch, device, args.warmup, args.repeats,
                               args.min_time, args.max_repeats, backward_sizes=args.backward_sizes,
                               memory=memory)
    if args.out:
        markdown = Path(args.markdown or args.out + '.md')
        method = (f'Batch {args.batch}. Time: for each size and mode the models run side by side in one '
                  f'process, {args.warmup} untimed warm-up call(s) each, then interleaved rounds (each '
                  'round calls every model once, in a shuffled order, so that all share the load of '
                  f'the moment): at least {args.repeats} rounds and {args.min_time:g} s per model, at '
                  f'most {args.max_repeats}; medians are reported. '
                  + ('Peak memory: not measured (`--memory none`). ' if args.memory == 'none' else
                     'Peak memory: each model, size and mode in a fresh process (one warm-up call, then '
                     'the measured one)' + ('; not for compiled models. ' if args.engine != 'eager' else '. '))
                  + (f'Compiled: `torch.compile(model, dynamic=False, backend={args.compile_backend!r})`, '
                     'one compilation per size and mode (the first call). ' if args.engine != 'eager' else '')
                  + 'Backbones return all four stages, stochastic depth off.')
        write_report(results, Path(args.out), markdown, info_before, machine_info(device), started, argv,
                     method, args.time)
    return 0


def write_report(results: list[Result], prefix: Path, markdown: Path, before: dict, after: dict,
                 started: datetime, argv=None, method: str = '', metric: str = 'wall') -> None:
    """PREFIX.csv, PREFIX.png and the Markdown report (machine, command, date, tables)."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    command = 'python tools/benchmark.py ' + ' '.join(sys.argv[1:] if argv is None else argv)
    write_csv(results, prefix.with_suffix('.csv'))
    title = (f'{before["cpu"]} ({before["device"]}, {before["threads"]} threads), torch {before["torch"]}, '
             f'{started:%Y-%m-%d}')
    plot(results, prefix.with_suffix('.png'), title, metric)
    finished = datetime.now(timezone.utc)
    head = ['# Backbone speed and memory against input size', '',
            f'Measured by `tools/benchmark.py` (this file, `{prefix.name}.csv` and `{prefix.name}.png` are '
            'its output). ' + method, '',
            f'- date: {started:%Y-%m-%d %H:%M} – {finished:%H:%M} UTC',
            f'- machine: {before["cpu"]}, {before["cores"]} logical cores, device {before["device"]}'
            + (f' ({before["gpu"]})' if 'gpu' in before else ''),
            f'- torch {before["torch"]}, {before["threads"]} threads, Python {before["python"]}',
            f'- load average (1/5/15 min) before: {before["load_average"]}, after: {after["load_average"]}',
            f'- command: `{command}`', '']
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text('\n'.join(head) + '\n' + markdown_tables(results, metric))


if __name__ == '__main__':
    sys.exit(main())
