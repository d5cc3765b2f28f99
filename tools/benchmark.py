#!/usr/bin/env python
"""Speed and memory of whole backbones (or models from configs) over input sizes, side by side.

    # MILA-T beside mmpretrain's Swin-T and ConvNeXt-T, dense-prediction backbones, 224^2 ... 1024^2
    # (the command of docs/benchmark_models.md):
    python tools/benchmark.py mila-t swin-t convnext-t --sizes 224 512 1024 \\
        --backward-sizes 224 512 1024 --threads 1 --time cpu --repeats 3 --min-time 0 \\
        --max-repeats 3 --out docs/benchmark_scaling --markdown docs/benchmark_models.md
    # a model from a config (classifier logits, detector / segmentor tensor mode):
    python tools/benchmark.py --config configs/mila_t_in1k.py --sizes 224 --modes forward
    # kernel launches of one training step (batch 1, 64^2; MILA on its Triton path, on CPU under the
    # Triton interpreter), float32 and bf16 autocast (the table of docs/benchmark_models.md):
    python tools/benchmark.py mila-t swin-t convnext-t --launches
    # host time of mmmila's dispatch layer per op call and per MILA-T forward (ops stubbed out;
    # TRITON_INTERPRET=1 adds the Triton path's checks on CPU):
    TRITON_INTERPRET=1 python tools/benchmark.py mila-t --dispatch-cost
    # what the compiled CPU kernels save: each call of the ops that have them in a MILA-T
    # training step at 512^2, forward + backward, compiled against the PyTorch implementation:
    python tools/benchmark.py mila-t --sizes 512 --threads 2 --cpu-kernels

For each input size and mode (``forward``: eval mode under ``torch.inference_mode``;
``forward+backward``: train mode, forward, mean of every output, backward) all models are built
side by side in one process; each runs untimed warm-up calls, then the timed calls run in
interleaved rounds -- every round calls each model once, in a shuffled order, so that one model
does not get a quiet minute and another a busy one -- at least ``--repeats`` rounds and at least
``--min-time`` seconds per model, at most ``--max-repeats``. It reports the median latency, its
interquartile range, throughput (batch / median) and time per megapixel, the median process CPU
time of the same calls, the first model's speed relative to each other model (the median and
quartiles of their time ratios within each round: a change of the machine's speed between rounds
moves both calls of a round and cancels) and its memory relative to theirs, and the
peak tensor memory of one call above what was allocated before it, measured for each model, size
and mode in a fresh process (after one warm-up call there): on CUDA
``torch.cuda.max_memory_allocated``, on CPU the running sum of the tensor allocations and frees
that ``torch.profiler`` records (so it does not depend on how malloc keeps or returns pages).
On a CPU shared with other jobs, wall time depends on the load; with ``--threads 1`` the process
CPU time measures the work itself, and ``--time cpu`` plots it. Device: the one given (default:
CUDA if available, else CPU).

``--out PREFIX`` writes ``PREFIX.csv`` (every measurement), ``PREFIX.png`` (time, memory and time
per pixel against pixels, log-log) and a Markdown report (tables, machine, command and date) to
``--markdown PATH`` (default ``PREFIX.md``). What is measured and reported is
``mmmila.bench.model_speed`` (peak memory: ``mmmila.bench.memory``); this file parses the
arguments and calls it.
"""
from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from mmmila.bench.command import command_line
from mmmila.bench.launches import DTYPES, launch_table, training_step_launches_in_subprocess
from mmmila.bench.machine import machine_info
from mmmila.bench.model_speed import (COMPILED, MODES, benchmark_models, peak_memory_in_subprocess,
                                      write_report)
from mmmila.bench.models import BACKBONES, LABELS, build_backbone, build_from_config

REPO = Path(__file__).resolve().parents[1]


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
    parser.add_argument('--launches', action='store_true',
                        help='instead of timing: count the kernel launches of one training step of each '
                        'backbone (mmmila.bench.launches) and print them side by side')
    parser.add_argument('--launch-size', type=int, default=64, help='input side of --launches (default 64)')
    parser.add_argument('--dispatch-cost', action='store_true',
                        help='instead of timing: the host time of mmmila\'s dispatch layer (input checks, '
                        'backend choice) per op call and per forward of each named MILA backbone, the ops '
                        'stubbed out (mmmila.bench.dispatch_cost); the Triton path too where its kernels '
                        'can run (CUDA, or TRITON_INTERPRET=1)')
    parser.add_argument('--cpu-kernels', action='store_true',
                        help='instead of timing models: each call of the ops with compiled CPU kernels (the '
                        'depthwise convolutions, the Downsample, the attention, GELU + fc2) in a training '
                        'step of each named MILA backbone at --sizes, forward + backward, with mmmila\'s '
                        'compiled CPU kernels and with the PyTorch implementation '
                        '(mmmila.bench.cpu_kernel_gain)')
    parser.add_argument('--dtypes', nargs='+', choices=sorted(DTYPES), default=['float32', 'bfloat16'],
                        help='--launches: float32 and/or the autocast dtypes (default float32 bfloat16)')
    args = parser.parse_args(argv)
    if args.launches and (args.config or not args.models):
        parser.error('--launches counts named backbones (not --config models)')
    if args.launches and ((args.launch_size + 31) // 32) ** 2 * args.batch < 2:
        parser.error(f'--launch-size {args.launch_size} with batch {args.batch} leaves one value per channel '
                     'for the last stages\' BatchNorm in training; use --launch-size 64 or more')
    if args.dispatch_cost and (args.config or not args.models
                               or not all(m.startswith('mila') for m in args.models)):
        parser.error('--dispatch-cost measures named MILA backbones (mila-t, mila-s, mila-b)')
    if args.cpu_kernels and (args.config or not args.models
                             or not all(m.startswith('mila') for m in args.models)):
        parser.error('--cpu-kernels measures named MILA backbones (mila-t, mila-s, mila-b)')
    if not args.models and not args.config:
        parser.error('name at least one model or pass --config')
    unknown = [m for m in args.models if m not in BACKBONES]
    if unknown:
        parser.error(f'unknown model(s) {unknown}; choose from {sorted(BACKBONES)}')
    if min(args.sizes) < 32 or args.batch < 1:
        parser.error('sizes must be >= 32 and batch >= 1')
    return args


def count_launches(args, device: torch.device, argv) -> int:
    """``--launches``: one training step per backbone and dtype, each in a fresh process."""
    results = {(m, dt): training_step_launches_in_subprocess(m, dt, args.launch_size, args.batch, str(device))
               for m in args.models for dt in args.dtypes}
    table = launch_table(results, args.models, args.dtypes, LABELS)
    print(f'Kernel launches of one training step, batch {args.batch}, {args.launch_size}x{args.launch_size}, '
          f'{device} ({"MILA on its Triton path" + (", Triton interpreter" if device.type == "cpu" else "")}):')
    print(table)
    if args.markdown:
        command = command_line(Path(__file__).resolve(), sys.argv[1:] if argv is None else argv, REPO)
        Path(args.markdown).write_text(f'{table}\n\n`{command}`, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n')
    return 0


def dispatch_cost(args) -> int:
    """``--dispatch-cost``: µs per call of each dispatch entry point and ms per forward, per backbone."""
    from mmmila.bench.dispatch_cost import dispatch_table, entry_point_costs, op_calls_per_forward
    from mmmila.ops.dispatch import dwconv_triton_problem

    backends = ['auto']
    probe = torch.zeros(1, 1, 1, device='cuda' if torch.cuda.is_available() else 'cpu')
    why_not = dwconv_triton_problem(probe)
    if why_not is None:
        backends.append('triton')
    costs = {b: entry_point_costs(b) for b in backends}
    print(f'Host time of the dispatch layer (ops stubbed out), {torch.get_num_threads()} thread(s)'
          + ('' if why_not is None else f'; Triton path not measured: {why_not}') + ':')
    for m in args.models:
        print(dispatch_table(LABELS.get(m, m), op_calls_per_forward(build_backbone(m), args.launch_size), costs))
    return 0


def cpu_kernel_gain(args) -> int:
    """``--cpu-kernels``: the calls of the ops with compiled CPU kernels in a training step, compiled
    against PyTorch."""
    from mmmila.bench.cpu_kernel_gain import op_calls, step_table, time_call
    from mmmila.ops import cpu_kernels

    if not cpu_kernels.AVAILABLE:
        print(f'--cpu-kernels: the compiled CPU kernels are not available: {cpu_kernels.REASON}',
              file=sys.stderr)
        return 1
    print(f'Calls of the ops with compiled CPU kernels, forward + backward, PyTorch implementation '
          f'against the compiled CPU kernels, batch {args.batch}, {torch.get_num_threads()} thread(s), '
          f'median of {args.max_repeats} interleaved rounds:')
    for m in args.models:
        for size in args.sizes:
            calls = op_calls(build_backbone(m).train(), size, args.batch)
            timings = {call: time_call(call, rounds=args.max_repeats) for call in calls}
            print(step_table(LABELS.get(m, m), size, calls, timings))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    if args.launches:
        return count_launches(args, device, argv)
    if args.dispatch_cost:
        return dispatch_cost(args)
    if args.cpu_kernels:
        return cpu_kernel_gain(args)
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
                  f'most {args.max_repeats}; medians are reported, and the first model\'s speed against '
                  'each other one (of the same engine) as the median of their time ratios within a '
                  'round, so that a change of the machine\'s speed between rounds cancels. '
                  + ('Peak memory: not measured (`--memory none`). ' if args.memory == 'none' else
                     'Peak memory: each model, size and mode in a fresh process (one warm-up call, then '
                     'the measured one)' + ('; not for compiled models. ' if args.engine != 'eager' else '. '))
                  + (f'Compiled: `torch.compile(model, dynamic=False, backend={args.compile_backend!r})`, '
                     'one compilation per size and mode (the first call). ' if args.engine != 'eager' else '')
                  + 'Backbones return all four stages, stochastic depth off.')
        command = command_line(Path(__file__).resolve(), sys.argv[1:] if argv is None else argv, REPO)
        write_report(results, Path(args.out), markdown, info_before, machine_info(device), started, command,
                     method, args.time)
    return 0


if __name__ == '__main__':
    sys.exit(main())
