"""Speed and memory of whole models side by side: what ``tools/benchmark.py`` measures and reports.

For each input size and mode (:func:`mmmila.bench.steps.model_step`: ``forward`` in eval mode under
``torch.inference_mode``; ``forward+backward`` in train mode: forward, mean of every output,
backward) all models are built side by side in one process; each runs untimed warm-up calls, then
the timed calls run in interleaved rounds (:func:`mmmila.bench.timing.time_interleaved`). Peak
memory is :func:`mmmila.bench.memory.peak_memory` (live tensor memory above the start of one call),
by default of each model, size and mode in a fresh process (:func:`peak_memory_in_subprocess`).
"""
from __future__ import annotations

import gc
import statistics
import time
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from mmmila.bench.memory import peak_memory, peak_memory_in_fresh_process
from mmmila.bench.models import LABELS, build_backbone, build_from_config
from mmmila.bench.steps import model_step
from mmmila.bench.timing import sync, time_interleaved

MODES = ('forward', 'forward+backward')
COMPILED = ' (compiled)'   # suffix of a model measured under torch.compile (--engine)


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
    # the first model of its engine in the run relative to this one, round by round
    # (:func:`paired_speedup`): median and quartiles of (this model's wall time / the first model's)
    speedup: float | None = None
    speedup_q1: float | None = None
    speedup_q3: float | None = None

    @property
    def megapixels(self) -> float:
        return self.batch * self.size * self.size / 1e6


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


def paired_speedup(first: list[float], other: list[float]) -> tuple[float, float, float]:
    """How much faster the first model is than another, round by round: the median and quartiles of
    ``other[i] / first[i]`` over the rounds i of :func:`time_interleaved` (above 1: the first is faster).

    Both calls of a round ran within a second or two of each other, so a change of the machine's
    speed between rounds (another job, a throttled core) moves both and cancels in their ratio,
    where it widens the spread of each model's own times and so the ratio of their medians.
    """
    if len(first) != len(other) or not first:
        raise ValueError(f'need the same number of rounds (at least one), got {len(first)} and {len(other)}')
    ratios = [b / a for a, b in zip(first, other)]
    med = statistics.median(ratios)
    if len(ratios) == 1:
        return med, med, med
    q1, _, q3 = statistics.quantiles(ratios, n=4, method='inclusive')
    return med, q1, q3


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
                steps[name] = step = model_step(model, x, mode)
                peaks[name] = memory(name, size, mode) if memory else None
                sync(device)
                start = time.perf_counter()
                if memory:
                    step()
                else:
                    peaks[name] = peak_memory(step, device).above_start
                sync(device)
                first[name] = time.perf_counter() - start
                for _ in range(warmup - 1):
                    step()
            times = time_interleaved(steps, device, repeats, min_time, max_repeats)
            for name in steps:
                res = summarise(name, size, mode, batch, *times[name][:1], peaks[name], times[name][1])
                res.first_call_s = first[name]
                # against the first model of its engine (eager models against eager, compiled likewise)
                lead = next(n for n in steps if n.endswith(COMPILED) == name.endswith(COMPILED))
                paired = ''
                if name != lead:
                    res.speedup, res.speedup_q1, res.speedup_q3 = paired_speedup(times[lead][0],
                                                                                 times[name][0])
                    paired = (f'  {lead} {res.speedup:.2f}x as fast, round by round (IQR '
                              f'{res.speedup_q1:.2f}-{res.speedup_q3:.2f})')
                log(f'{name:12s} {size:5d}^2 {mode:17s} {res.median_ms:10.1f} ms (IQR {res.q1_ms:.1f}-'
                    f'{res.q3_ms:.1f}, n={res.repeats}), CPU {res.cpu_ms:10.1f} ms  '
                    f'peak {res.peak_mem_mb if res.peak_mem_mb is None else round(res.peak_mem_mb)} MB  '
                    f'first call {first[name]:.1f} s' + paired)
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
    """Peak memory (bytes above the start) of one call of a model (a backbone name or a config path)
    in a fresh process, after one warm-up call there, so that what earlier models left in the
    allocator or the heap does not blur the figure."""
    return peak_memory_in_fresh_process('mmmila.bench.model_speed:memory_step', threads, spec=spec, size=size,
                                        mode=mode, batch=batch, device=str(device))


def memory_step(spec: str, size: int, mode: str, batch: int, device: str) -> Callable[[], None]:
    """The fresh process's call of :func:`peak_memory_in_subprocess`, after one warm-up call (the first
    call's one-off allocations, caches and tables, are not the model's working set)."""
    torch.manual_seed(0)
    factory = build_from_config(spec, batch) if spec.endswith('.py') else lambda _: build_backbone(spec)
    device = torch.device(device)
    step = model_step(factory(size).to(device), torch.rand(batch, 3, size, size, device=device), mode)
    step()
    return step


# ---- reporting -------------------------------------------------------------------------------


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
    """The first model's speed relative to each other model (above 1 means the first model is faster)
    and its peak memory relative to theirs, a row per size.

    Wall time: the round-by-round ratio of :func:`paired_speedup`, median (interquartile range)
    (``models[0]`` is the first model of its engine in the run); for CPU time the ratio of the medians
    (from the same interleaved rounds)."""
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
            if metric == 'wall' and b.speedup is not None:
                return f'{b.speedup:.2f}x ({b.speedup_q1:.2f}–{b.speedup_q3:.2f})'
            return f'{time_of(b) / time_of(a):.2f}x'
        return '–' if a.peak_mem_mb is None or b.peak_mem_mb is None else f'{a.peak_mem_mb / b.peak_mem_mb:.2f}x'

    how = ('wall time, round by round: median (IQR)' if metric == 'wall' else f'{metric} time')
    out = [f'**{mode}**: {label(first)} relative to the others ({how}; memory: peak MB ratio)', '', header]
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


def write_report(results: list[Result], prefix: Path, markdown: Path, before: dict, after: dict,
                 started: datetime, command: str, method: str = '', metric: str = 'wall') -> None:
    """PREFIX.csv, PREFIX.png and the Markdown report (machine, command, date, tables).

    ``command``: the command as a user types it at the repository's root
    (:func:`mmmila.bench.command.command_line`).
    """
    prefix.parent.mkdir(parents=True, exist_ok=True)
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
