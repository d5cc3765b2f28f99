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
(latency does not depend on them). Prints a Markdown table and the machine line.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from mmmila.deploy import onnx_export as export_onnx

ENGINES = ('eager', 'compile', 'onnxruntime')


def machine_line() -> str:
    cpu = platform.machine()
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True, check=False).stdout
        cpu = next((ln.split(':', 1)[1].strip() for ln in out.splitlines() if ln.startswith('Model name')), cpu)
    except OSError:
        pass
    load = ' / '.join(f'{x:.2f}' for x in os.getloadavg())
    return (f'{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), '
            f'load average {load}, {time.strftime("%Y-%m-%d %H:%M")}')


def parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().split('x')
    if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f'a size is H or HxW, got {text!r}')
    h, w = (int(parts[0]), int(parts[-1]))
    if h % 32 or w % 32:
        raise argparse.ArgumentTypeError(f'sizes must be multiples of 32, got {text!r}')
    return h, w


def build(arch: str) -> torch.nn.Module:
    from mmmila.models import MILA
    torch.manual_seed(0)
    model = MILA(arch=arch, out_indices=(0, 1, 2, 3), drop_path_rate=0.0)
    model.init_weights()
    return model.eval()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--arch', default='tiny', help='MILA arch (default tiny)')
    parser.add_argument('--sizes', type=parse_size, nargs='+', default=[(512, 512), (800, 1280)])
    parser.add_argument('--rounds', type=int, default=5, help='timed calls per engine and size')
    parser.add_argument('--engines', nargs='+', choices=ENGINES, default=list(ENGINES))
    parser.add_argument('--threads', type=int, default=None, help='torch and onnxruntime intra-op threads')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    model = build(args.arch)
    runners = {}
    if 'eager' in args.engines:
        runners['eager'] = model
    if 'compile' in args.engines:
        compiled = torch.compile(model)

        def run_compiled(x):
            torch._dynamo.mark_dynamic(x, 2)       # H and W symbolic: one compilation for all sizes
            torch._dynamo.mark_dynamic(x, 3)
            return compiled(x)
        runners['compile'] = run_compiled
    tmp = tempfile.TemporaryDirectory()
    if 'onnxruntime' in args.engines:
        import onnxruntime as ort
        module = export_onnx.Exportable(model, 'model').eval()
        module.normalise.enabled = False          # a bare backbone: the image is its input
        path = os.path.join(tmp.name, 'backbone.onnx')
        t0 = time.perf_counter()
        export_onnx.export(module, path, args.sizes[0], dynamic=True)
        print(f'onnx export: {time.perf_counter() - t0:.1f} s', file=sys.stderr)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        session = ort.InferenceSession(path, opts, providers=['CPUExecutionProvider'])
        name = session.get_inputs()[0].name
        runners['onnxruntime'] = lambda x: session.run(None, {name: x.numpy()})

    rows = []
    for h, w in args.sizes:
        x = torch.randn(1, 3, h, w)
        warm = {}
        for engine, run in runners.items():
            t0 = time.perf_counter()
            with torch.no_grad():
                run(x)
            warm[engine] = time.perf_counter() - t0
        times = {engine: [] for engine in runners}
        for _ in range(args.rounds):
            order = list(runners)
            random.shuffle(order)
            for engine in order:
                t0 = time.perf_counter()
                with torch.no_grad():
                    runners[engine](x)
                times[engine].append(time.perf_counter() - t0)
        base = statistics.median(times['eager']) if 'eager' in times else None
        for engine in runners:
            med = statistics.median(times[engine])
            rows.append((f'{h}x{w}', engine, med, min(times[engine]), warm[engine],
                         base / med if base else float('nan')))
    print(f'MILA-{args.arch} backbone, batch 1, {args.rounds} rounds; {machine_line()}')
    print('| size | engine | median (s) | min (s) | first call (s) | speed vs eager |')
    print('|---|---|---|---|---|---|')
    for size, engine, med, best, first, ratio in rows:
        print(f'| {size} | {engine} | {med:.3f} | {best:.3f} | {first:.1f} | {ratio:.2f}x |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
