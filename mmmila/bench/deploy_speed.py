"""Inference latency of a MILA backbone by engine (eager PyTorch, torch.compile, onnxruntime): what
``tools/benchmark_deploy.py`` measures."""
from __future__ import annotations

import os
import statistics
import time
from typing import Callable

import torch

from mmmila.bench.timing import time_interleaved

ENGINES = ('eager', 'compile', 'onnxruntime')


def build_mila(arch: str) -> torch.nn.Module:
    """MILA of ``arch`` with all four outputs, no stochastic depth, initialised from seed 0, eval mode."""
    from mmmila.models import MILA
    torch.manual_seed(0)
    model = MILA(arch=arch, out_indices=(0, 1, 2, 3), drop_path_rate=0.0)
    model.init_weights()
    return model.eval()


def make_runners(model: torch.nn.Module, engines, export_hw: tuple[int, int], threads: int,
                 folder: str, log: Callable[[str], None] = print) -> dict:
    """{engine: fn(image)} of ``engines``: the model itself; ``torch.compile`` with H and W marked
    dynamic (one compilation serves every size); an onnxruntime CPU session of the backbone exported
    once to ``folder`` with dynamic H and W (``mmmila.deploy.onnx_export``), ``threads`` intra-op threads."""
    runners = {}
    if 'eager' in engines:
        runners['eager'] = model
    if 'compile' in engines:
        compiled = torch.compile(model)

        def run_compiled(x):
            torch._dynamo.mark_dynamic(x, 2)       # H and W symbolic: one compilation for all sizes
            torch._dynamo.mark_dynamic(x, 3)
            return compiled(x)
        runners['compile'] = run_compiled
    if 'onnxruntime' in engines:
        import onnxruntime as ort

        from mmmila.deploy import onnx_export
        module = onnx_export.Exportable(model, 'model').eval()
        module.normalise.enabled = False          # a bare backbone: the image is its input
        path = os.path.join(folder, 'backbone.onnx')
        t0 = time.perf_counter()
        onnx_export.export(module, path, export_hw, dynamic=True)
        log(f'onnx export: {time.perf_counter() - t0:.1f} s')
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        session = ort.InferenceSession(path, opts, providers=['CPUExecutionProvider'])
        name = session.get_inputs()[0].name
        runners['onnxruntime'] = lambda x: session.run(None, {name: x.numpy()})
    return runners


def measure_engines(runners: dict, sizes: list[tuple[int, int]], rounds: int) -> list[dict]:
    """Per size (batch 1, random image): one warm-up call per engine (timed: for torch.compile the
    compilation), then ``rounds`` interleaved rounds (:func:`mmmila.bench.timing.time_interleaved`).

    Returns:
        list[dict]: ``size``, ``engine``, ``median_s``, ``min_s``, ``first_call_s`` and
        ``speed_vs_eager`` (eager's median / this engine's; NaN without eager) per size and engine.
    """
    rows = []
    cpu = torch.device('cpu')
    for h, w in sizes:
        x = torch.randn(1, 3, h, w)

        def call(run):
            with torch.no_grad():
                run(x)
        first = {}
        for engine, run in runners.items():
            t0 = time.perf_counter()
            call(run)
            first[engine] = time.perf_counter() - t0
        times = time_interleaved({e: (lambda run=run: call(run)) for e, run in runners.items()}, cpu, rounds)
        base = statistics.median(times['eager'][0]) if 'eager' in times else None
        for engine in runners:
            wall = times[engine][0]
            med = statistics.median(wall)
            rows.append(dict(size=f'{h}x{w}', engine=engine, median_s=med, min_s=min(wall),
                             first_call_s=first[engine], speed_vs_eager=base / med if base else float('nan')))
    return rows
