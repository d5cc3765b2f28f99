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

Peak memory (CPU): each (variant, shape, mode) runs once in a fresh subprocess. After the inputs,
the RoPE tables and a tiny warm-up call exist, the peak-RSS counter is reset (``5`` written to
``/proc/self/clear_refs``); the figure is VmHWM minus VmRSS at that point, i.e. the resident memory
the call itself added at its peak (outputs and gradients included), as the OS saw it. On CUDA the
figure is ``torch.cuda.max_memory_allocated`` above the allocation before the call.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time

import torch

from mmmila.bench.authors_attention import authors_attention, authors_table, complex_rope, dense_rope
from mmmila.bench.machine import machine_line
from mmmila.bench.traffic import count_traffic, fused_bytes
from mmmila.ops import mila_linear_attention_cpu, mila_linear_attention_ref, rope2d_cos_sin

# (image H, image W) -> stage maps at strides 4, 8, 16, 32; MILA-T widths and heads.
STAGES = {1: (4, 64, 2), 2: (8, 128, 4), 3: (16, 256, 8), 4: (32, 512, 16)}
SIZES = ('1280x800', '512x512')


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


def make_variants(hw, channels, device, with_compile: bool) -> dict:
    table = complex_rope(authors_table(hw, channels, device))
    dense = dense_rope(hw, channels)
    variants = {
        'authors': lambda qk, v, nh: authors_attention(qk, v, hw, nh, table),
        'authors-dense': lambda qk, v, nh: authors_attention(qk, v, hw, nh, dense),
        'reference': lambda qk, v, nh: mila_linear_attention_ref(qk, v, hw, nh),
        'torch': lambda qk, v, nh: mila_linear_attention_cpu(qk, v, hw, nh),
    }
    if with_compile:
        compiled = torch.compile(mila_linear_attention_ref, dynamic=False)
        variants['compiled'] = lambda qk, v, nh: compiled(qk, v, hw, nh)
    if device.type == 'cuda':
        from mmmila.kernels import mila_linear_attention_triton
        variants['triton'] = lambda qk, v, nh: mila_linear_attention_triton(qk, v, hw, nh)
    return variants


def make_inputs(hw, channels, batch, device, dtype, seed=0):
    gen = torch.Generator(device='cpu').manual_seed(seed)
    n = hw[0] * hw[1]
    qk = torch.randn(batch, n, 2 * channels, generator=gen).to(device, dtype)
    v = torch.randn(batch, n, channels, generator=gen).to(device, dtype)
    g = torch.randn(batch, n, channels, generator=gen).to(device, dtype)
    return qk, v, g


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def run_once(fn, qk, v, g, nh, mode):
    """One call; returns (out, dqk, dv) (grads None for 'fwd')."""
    if mode == 'fwd':
        with torch.no_grad():
            return fn(qk, v, nh), None, None
    qk = qk.detach().requires_grad_()
    v = v.detach().requires_grad_()
    out = fn(qk, v, nh)
    out.backward(g)
    return out, qk.grad, v.grad


def rel_err(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def time_shape(variants, qk, v, g, nh, rounds, device):
    """Interleaved timing and the output check.

    Returns:
        tuple: ({mode: {variant: [wall seconds]}}, {mode: {variant: [CPU seconds]}},
        {variant: max relative difference to the baseline over out, dqk, dv}).
    """
    wall = {mode: {name: [] for name in variants} for mode in ('fwd', 'fwd+bwd')}
    cpu = {mode: {name: [] for name in variants} for mode in wall}
    check = {}
    base = run_once(variants['authors'], qk, v, g, nh, 'fwd+bwd')
    for name, fn in variants.items():                       # warm-up and equality check
        res = run_once(fn, qk, v, g, nh, 'fwd+bwd')
        check[name] = max(rel_err(x, y) for x, y in zip(res, base))
    order = list(variants)
    shuffle = random.Random(0).shuffle
    for mode in wall:
        for _ in range(rounds):
            shuffle(order)   # no variant always runs right after the same one (cache, heap state)
            for name in order:
                fn = variants[name]
                _sync(device)
                start, start_cpu = time.perf_counter(), time.process_time()
                run_once(fn, qk, v, g, nh, mode)
                _sync(device)
                wall[mode][name].append(time.perf_counter() - start)
                cpu[mode][name].append(time.process_time() - start_cpu)
    return wall, cpu, check


def _proc_kb(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


def peak_memory_child(args):
    """Subprocess body: one measured call, prints the peak added memory in bytes."""
    hw = tuple(args.child_hw)
    device = torch.device(args.device)
    variants = make_variants(hw, args.child_c, device, args.compile)
    fn = variants[args.child_variant]
    qk, v, g = make_inputs(hw, args.child_c, args.batch, device, getattr(torch, args.dtype))
    rope2d_cos_sin(hw[0], hw[1], args.child_c, device)      # the model caches these tables too
    if args.child_variant == 'compiled':   # compilation is one-time: warm up at the real shape
        run_once(fn, qk, v, g, args.child_nh, args.child_mode)
    else:                                  # library warm-up at a tiny shape
        tiny = make_variants((4, 8), args.child_c, device, False)[args.child_variant]
        run_once(tiny, *make_inputs((4, 8), args.child_c, 1, device, qk.dtype), args.child_nh,
                 args.child_mode)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run_once(fn, qk, v, g, args.child_nh, args.child_mode)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
    else:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        before = _proc_kb('VmRSS:')
        run_once(fn, qk, v, g, args.child_nh, args.child_mode)
        peak = (_proc_kb('VmHWM:') - before) * 1024
    print(json.dumps({'peak_bytes': peak}))


def traffic_table(args):
    """Markdown table of bytes moved per attention call, each MILA-T stage at 1280 x 800, B = 1."""
    bandwidth = 3.35e12   # H100 SXM HBM3, bytes/s
    print('| stage | N | C | authors fp32 fwd MB (ops) | fwd+bwd MB (ops) | fused fp32 fwd / fwd+bwd MB '
          '| fused bf16 fwd / fwd+bwd MB | H100 time at 3.35 TB/s: authors fp32 fwd / fwd+bwd | '
          'fused bf16 fwd / fwd+bwd | fused fp32 fwd / fwd+bwd |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for stage, (stride, channels, nh) in STAGES.items():
        hw = (800 // stride, 1280 // stride)
        n = hw[0] * hw[1]
        qk, v, g = make_inputs(hw, channels, 1, torch.device('cpu'), torch.float32)
        fn = make_variants(hw, channels, torch.device('cpu'), False)['authors']
        fb, fo, bb, bo = count_traffic(fn, qk, v, g, nh)
        f32, b32 = fused_bytes(n, channels, 4)
        f16, b16 = fused_bytes(n, channels, 2)
        us = lambda b: f'{b / bandwidth * 1e6:.1f}'  # noqa: E731
        mb = lambda b: f'{b / 1e6:.1f}'  # noqa: E731
        print(f'| {stage} | {n} | {channels} | {mb(fb)} ({fo}) | {mb(fb + bb)} ({fo + bo}) | '
              f'{mb(f32)} / {mb(f32 + b32)} | {mb(f16)} / {mb(f16 + b16)} | '
              f'{us(fb)} / {us(fb + bb)} us | {us(f16)} / {us(f16 + b16)} us | '
              f'{us(f32)} / {us(f32 + b32)} us |')


def peak_memory(args, variant, hw, channels, nh, mode):
    """Run :func:`peak_memory_child` in a fresh interpreter; returns bytes."""
    cmd = [sys.executable, __file__, '--child-variant', variant, '--child-hw', str(hw[0]), str(hw[1]),
           '--child-c', str(channels), '--child-nh', str(nh), '--child-mode', mode,
           '--batch', str(args.batch), '--dtype', args.dtype, '--device', args.device]
    if args.threads:
        cmd += ['--threads', str(args.threads)]
    if args.compile:
        cmd.append('--compile')
    if args.warm_heap:
        cmd.append('--warm-heap')
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])['peak_bytes']


def keep_heap_warm() -> None:
    """Make glibc keep freed memory for reuse (no mmap for big blocks, no trimming).

    By default every allocation above glibc's mmap threshold (at most 32 MB) is fresh memory,
    and page faults on it cost ~2 us per 4 KB page on this virtual machine: an implementation
    that allocates many N x C temporaries pays for that on each call. With this setting no
    variant pays page faults after warm-up, so the times compare the arithmetic and memory
    traffic alone. Only glibc (Linux) honours it.
    """
    import ctypes
    libc = ctypes.CDLL('libc.so.6')
    m_trim_threshold, m_mmap_threshold = -1, -3
    if not (libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, (1 << 31) - 1)):
        raise RuntimeError('mallopt failed: --warm-heap needs glibc')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', nargs='+', default=list(SIZES), type=size_arg, metavar='WxH',
                        help='input image sizes (default: %(default)s)')
    parser.add_argument('--stages', nargs='+', type=int, default=[1], choices=[1, 2, 3, 4],
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
    for name, kw in (('--child-variant', {}), ('--child-hw', dict(nargs=2, type=int)),
                     ('--child-c', dict(type=int)), ('--child-nh', dict(type=int)), ('--child-mode', {})):
        parser.add_argument(name, help=argparse.SUPPRESS, **kw)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.warm_heap:
        keep_heap_warm()
    if args.child_variant:
        return peak_memory_child(args)
    if args.traffic:
        return traffic_table(args)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    print(f'# machine: {machine_line(device)}')
    print(f'# command: python {" ".join(sys.argv)}' + ('  (glibc heap kept warm)' if args.warm_heap else ''))
    results = []
    for size in args.sizes:
        for stage in args.stages:
            stride, channels, nh = STAGES[stage]
            img_h, img_w = image_size(size)
            hw = (-(-img_h // stride), -(-img_w // stride))
            variants = make_variants(hw, channels, device, args.compile)
            qk, v, g = make_inputs(hw, channels, args.batch, device, dtype)
            wall, cpu, check = time_shape(variants, qk, v, g, nh, args.rounds, device)
            n = hw[0] * hw[1]
            print(f'\n## {size}, stage {stage}: B={args.batch}, H x W = {hw[0]} x {hw[1]} '
                  f'(N = {n}), C = {channels}, {nh} heads, {args.dtype}')
            mem = {}
            if not args.no_memory:
                mem = {name: {mode: peak_memory(args, name, hw, channels, nh, mode)
                              for mode in ('fwd', 'fwd+bwd')} for name in variants}
            print('| variant | max rel. diff vs authors (out, dqk, dv) | fwd ms | fwd speed-up '
                  '| fwd+bwd ms | fwd+bwd speed-up | CPU-time speed-up fwd / fwd+bwd '
                  '| fwd peak MB | fwd+bwd peak MB | fwd+bwd memory ratio |')
            print('|---|---|---|---|---|---|---|---|---|---|')
            med = {kind: {mode: {name: statistics.median(t[mode][name]) for name in variants}
                          for mode in t} for kind, t in (('wall', wall), ('cpu', cpu))}
            for name in variants:
                up = {kind: {mode: med[kind][mode]['authors'] / med[kind][mode][name]
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
                               fwdbwd_mem_ratio=mem[name]['fwd+bwd'] / mem['authors']['fwd+bwd'])
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
            json.dump(dict(machine=machine_line(device), command=sys.argv, results=results), f, indent=1)


if __name__ == '__main__':
    main()
