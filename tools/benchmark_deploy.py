#!/usr/bin/env python
"""Inference latency of a MILA backbone by engine: eager PyTorch, torch.compile, onnxruntime.

    python tools/benchmark_deploy.py --arch tiny --sizes 512x512 800x1280 --rounds 5

For each size the three engines run side by side in one process: one warm-up call each (for
torch.compile: the compilation, timed separately), then ``--rounds`` rounds in which every engine
runs once, in a shuffled order per round, so that a change of machine load hits all engines alike.
The table gives the median and min per engine and the ratio of medians to eager. torch.compile
uses inductor with H and W marked dynamic (one compilation serves every size; the first-call
column shows it); the ONNX file is
exported once with dynamic H and W by ``tools/deploy/export_onnx.py``'s code (``mmmila.deploy.onnx_export``). Weights are random
(latency does not depend on them). Prints a Markdown table and the machine line. What is measured
is ``mmmila.bench.deploy_speed``; this file parses the arguments and prints the table.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time

import torch

from mmmila.bench.deploy_speed import ENGINES, build_mila, make_runners, measure_engines
from mmmila.bench.machine import machine_line


def parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().split('x')
    if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f'a size is H or HxW, got {text!r}')
    h, w = (int(parts[0]), int(parts[-1]))
    if h % 32 or w % 32:
        raise argparse.ArgumentTypeError(f'sizes must be multiples of 32, got {text!r}')
    return h, w


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--arch', default='tiny', help='MILA arch (default tiny)')
    parser.add_argument('--sizes', type=parse_size, nargs='+', default=[(512, 512), (800, 1280)])
    parser.add_argument('--rounds', type=int, default=5, help='timed calls per engine and size')
    parser.add_argument('--engines', nargs='+', choices=ENGINES, default=list(ENGINES))
    parser.add_argument('--threads', type=int, default=None, help='torch and onnxruntime intra-op threads')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        runners = make_runners(build_mila(args.arch), args.engines, args.sizes[0], torch.get_num_threads(),
                               folder, log=lambda line: print(line, file=sys.stderr))
        rows = measure_engines(runners, args.sizes, args.rounds)
    print(f'MILA-{args.arch} backbone, batch 1, {args.rounds} rounds; {machine_line(torch.device("cpu"))}, '
          f'{time.strftime("%Y-%m-%d %H:%M")}')
    print('| size | engine | median (s) | min (s) | first call (s) | speed vs eager |')
    print('|---|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['size']} | {r['engine']} | {r['median_s']:.3f} | {r['min_s']:.3f} | "
              f"{r['first_call_s']:.1f} | {r['speed_vs_eager']:.2f}x |")
    return 0


if __name__ == '__main__':
    sys.exit(main())
