#!/usr/bin/env python
"""Benchmark MILA's linear attention op, implementations side by side in one process.

    python tools/benchmark_attention.py                       # 1280x800 and 512x512, stage 1 of MILA-T
    python tools/benchmark_attention.py --stages 1 2 3 4      # every stage of MILA-T at the sizes
    python tools/benchmark_attention.py --compile             # add torch.compile of the reference

Variants (all take qk (B, N, 2C) and v (B, N, C) and return (B, N, C) before LePE):

- ``authors``: a plain transcription of the authors' formulation (``mmmila.bench.authors_attention``,
  written from docs/model.md, using none of mmmila's code): elu+1, RoPE
  by complex multiplication in float32 with an (H, W, C/2) complex table, heads by reshape/permute,
  k.mean, z, kv = (k_r N^-1/2)^T (v N^-1/2), (q_r kv) z; plain autograd. The baseline (the
  table is made once per shape, outside the timed calls, like the classification model's buffer).
- ``authors-dense``: the same chain with RoPE as docs/model.md describes the authors' dense-prediction
  backbone: the angles of the current map computed on every call (once, shared by q and k),
  float32 cos/sin tables, real arithmetic on the channel pairs. Context for detection and
  segmentation users; the targets of issue #5 are judged against ``authors``.
- ``reference``: ``mmmila.ops.mila_linear_attention_ref`` (the spec in code; plain autograd).
- ``torch``: ``mmmila.ops.mila_linear_attention_cpu`` -- the default CPU path (chunked autograd
  Function that saves only qk, v, S, m and recomputes the rest in backward).
- ``compiled``: ``torch.compile`` of the reference (only with ``--compile``).
- ``triton``: ``mmmila.kernels.mila_linear_attention_triton`` (only on a CUDA device).

Time: for each shape, every round runs each variant once, in a shuffled order, so that the variants
share the machine's load and none always follows the same one; the table shows the median wall time over rounds and the ratio of the baseline's
median to each variant's ("speed-up"). It also gives the same ratio for the process CPU time
(``time.process_time``), which on a machine shared with other jobs is the steadier measure of the
work done; with more than one thread it also counts the threads' spin-waiting. Forward is timed
under ``torch.no_grad()``; forward+backward is ``out = f(qk, v)`` then ``out.backward(g)`` with a
fixed g.

Peak memory: each (variant, shape, mode) runs once in a fresh subprocess, after its inputs, the RoPE
tables and a tiny warm-up call exist; the figure is ``mmmila.bench.memory.peak_memory``, the peak of
live tensor memory during the call above what was live before it (outputs and gradients included):
on CUDA ``torch.cuda.max_memory_allocated``, on CPU the tensor allocations and frees that
``torch.profiler`` records. (Until 2026-12 this tool reported, on CPU, the resident memory the call
added as the OS saw it, VmHWM minus VmRSS; the tables of docs/benchmark.md dated before then are
that figure, which also counts the allocator's own pages.)

The variants, the timing and the memory child are ``mmmila.bench.attention_speed``; this file
parses the arguments and prints the tables.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import torch

from mmmila.bench.attention_speed import (BASELINE, OP_MODES, STAGES, keep_heap_warm, make_inputs,
                                          make_variants, peak_memory_of, stage_map, time_shape, traffic_rows)
from mmmila.bench.command import command_line
from mmmila.bench.machine import machine_line

REPO = Path(__file__).resolve().parents[1]
SIZES = ('1280x800', '512x512')
H100_BYTES_S = 3.35e12   # H100 SXM HBM3


def image_size(text: str) -> tuple[int, int]:
    """'WxH' (e.g. '1280x800') -> (H, W)."""
    try:
        width, height = (int(x) for x in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'image size must be WIDTHxHEIGHT, e.g. 1280x800, got {text!r}')
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f'image size must be positive, got {text!r}')
    return height, width


def size_arg(text: str) -> str:
    image_size(text)   # argparse reports the error
    return text


def print_traffic_table() -> None:
    """Markdown table of bytes moved per attention call, each MILA-T stage at 1280 x 800, B = 1."""
    print('| stage | N | C | authors fp32 fwd MB (ops) | fwd+bwd MB (ops) | fused fp32 fwd / fwd+bwd MB '
          '| fused bf16 fwd / fwd+bwd MB | H100 time at 3.35 TB/s: authors fp32 fwd / fwd+bwd | '
          'fused bf16 fwd / fwd+bwd | fused fp32 fwd / fwd+bwd |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    us = lambda b: f'{b / H100_BYTES_S * 1e6:.1f}'  # noqa: E731
    mb = lambda b: f'{b / 1e6:.1f}'  # noqa: E731
    for r in traffic_rows():
        fb, fo, bb, bo = r['authors_fwd'], r['authors_fwd_ops'], r['authors_bwd'], r['authors_bwd_ops']
        (f32, b32), (f16, b16) = r['fused_fp32'], r['fused_bf16']
        print(f"| {r['stage']} | {r['n']} | {r['channels']} | {mb(fb)} ({fo}) | {mb(fb + bb)} ({fo + bo}) | "
              f'{mb(f32)} / {mb(f32 + b32)} | {mb(f16)} / {mb(f16 + b16)} | '
              f'{us(fb)} / {us(fb + bb)} us | {us(f16)} / {us(f16 + b16)} us | '
              f'{us(f32)} / {us(f32 + b32)} us |')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', nargs='+', default=list(SIZES), type=size_arg, metavar='WxH',
                        help='input image sizes (default: %(default)s)')
    parser.add_argument('--stages', nargs='+', type=int, default=[1], choices=sorted(STAGES),
                        help='MILA-T stages (1 = stride 4, C = 64, 2 heads)')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--dtype', default='float32', choices=['float32', 'float16', 'bfloat16'])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--rounds', type=int, default=15, help='timed calls per variant and mode')
    parser.add_argument('--threads', type=int, help='torch.set_num_threads (default: torch\'s choice)')
    parser.add_argument('--compile', action='store_true', help='add torch.compile of the reference')
    parser.add_argument('--no-memory', action='store_true', help='skip the peak-memory subprocesses')
    parser.add_argument('--warm-heap', action='store_true',
                        help='keep freed memory in the process (glibc mallopt), so that no variant '
                        'pays page faults: compares the computation alone')
    parser.add_argument('--json', help='also write the results to this file')
    parser.add_argument('--traffic', action='store_true',
                        help='only print the bytes-moved table of docs/kernels.md (a calculation)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.warm_heap:
        keep_heap_warm()
    if args.traffic:
        return print_traffic_table()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    command = command_line(Path(__file__).resolve(), sys.argv[1:] if argv is None else argv, REPO)
    print(f'# machine: {machine_line(device)}')
    print(f'# command: {command}' + ('  (glibc heap kept warm)' if args.warm_heap else ''))
    results = []
    for size in args.sizes:
        for stage in args.stages:
            _, channels, nh = STAGES[stage]
            hw = stage_map(image_size(size), stage)
            variants = make_variants(hw, channels, device, args.compile)
            qk, v, g = make_inputs(hw, channels, args.batch, device, dtype)
            wall, cpu, check = time_shape(variants, qk, v, g, nh, args.rounds, device)
            n = hw[0] * hw[1]
            print(f'\n## {size}, stage {stage}: B={args.batch}, H x W = {hw[0]} x {hw[1]} '
                  f'(N = {n}), C = {channels}, {nh} heads, {args.dtype}')
            mem = {}
            if not args.no_memory:
                mem = {name: {mode: peak_memory_of(name, hw, channels, nh, mode, args.batch, args.dtype,
                                                   device, args.threads) for mode in OP_MODES}
                       for name in variants}
            print('| variant | max rel. diff vs authors (out, dqk, dv) | fwd ms | fwd speed-up '
                  '| fwd+bwd ms | fwd+bwd speed-up | CPU-time speed-up fwd / fwd+bwd '
                  '| fwd peak MB | fwd+bwd peak MB | fwd+bwd memory ratio |')
            print('|---|---|---|---|---|---|---|---|---|---|')
            med = {kind: {mode: {name: statistics.median(t[mode][name]) for name in variants}
                          for mode in t} for kind, t in (('wall', wall), ('cpu', cpu))}
            for name in variants:
                up = {kind: {mode: med[kind][mode][BASELINE] / med[kind][mode][name]
                             for mode in wall} for kind in med}
                row = dict(size=size, stage=stage, n=n, channels=channels, heads=nh, variant=name,
                           rel_diff=check[name], fwd_ms=med['wall']['fwd'][name] * 1e3,
                           fwdbwd_ms=med['wall']['fwd+bwd'][name] * 1e3,
                           fwd_speedup=up['wall']['fwd'], fwdbwd_speedup=up['wall']['fwd+bwd'],
                           fwd_cpu_ms=med['cpu']['fwd'][name] * 1e3,
                           fwdbwd_cpu_ms=med['cpu']['fwd+bwd'][name] * 1e3,
                           fwd_cpu_speedup=up['cpu']['fwd'], fwdbwd_cpu_speedup=up['cpu']['fwd+bwd'])
                if mem:
                    row.update(fwd_peak_mb=mem[name]['fwd'] / 2 ** 20,
                               fwdbwd_peak_mb=mem[name]['fwd+bwd'] / 2 ** 20,
                               fwdbwd_mem_ratio=mem[name]['fwd+bwd'] / mem[BASELINE]['fwd+bwd'])
                results.append(row)
                memtxt = (f"{row['fwd_peak_mb']:.1f} | {row['fwdbwd_peak_mb']:.1f} | "
                          f"{row['fwdbwd_mem_ratio']:.2f}x" if mem else '- | - | -')
                print(f"| {name} | {row['rel_diff']:.1e} | {row['fwd_ms']:.2f} | "
                      f"{row['fwd_speedup']:.2f}x | {row['fwdbwd_ms']:.2f} | "
                      f"{row['fwdbwd_speedup']:.2f}x | {row['fwd_cpu_speedup']:.2f}x / "
                      f"{row['fwdbwd_cpu_speedup']:.2f}x | {memtxt} |")
    print('\n# load average at the end: %.2f / %.2f / %.2f' % os.getloadavg())
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(machine=machine_line(device), command=command, results=results), f, indent=1)


if __name__ == '__main__':
    main()
