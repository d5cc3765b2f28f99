#!/usr/bin/env python
"""GPU validation kit: one command that checks and measures mmmila's Triton path on a CUDA GPU.

    bash tools/gpu_check.sh --out DIR                 # on a CUDA machine (see docs/gpu.md)
    bash tools/gpu_check.sh --out DIR --dry-run       # the same code paths on CPU, tiny sizes

Sections, in this order (each writes ``DIR/gpu_check.json`` and ``DIR/gpu_check.md`` when it ends,
so a run stopped by ``--budget-s`` or a crash keeps what was done):

1. ``env``: GPU, torch, triton, CUDA, the carried wheels that were staged, and the measured
   device-to-device copy bandwidth (bytes read + written per second).
2. ``op_correctness``: the Triton op against a float64 statement of the maths, float32 / bfloat16 /
   float16, every distinct MILA-T/S/B stage at 800x1280 with B = 2 and an odd small map; fresh random
   inputs each run (the seed is recorded) and the allocator's blocks of the output sizes filled with
   NaN before each call (an unwritten element shows as NaN); output, dqk and dv within 1e-4
   (float32) or 2e-2 (16-bit) of max |truth|, never NaN.
3. ``op_targets``: the op's speed targets at MILA-T's stage 1 (C = 64, 2 heads, B = 1), bf16:
   forward+backward at 8x8 tokens within 100 us; at 512x512 tokens at least half the copy bandwidth
   (measured in the section; bytes = 4C + 7C elements per token) and at least 10x the authors'
   chain; each row with its target and whether it is met; then the 512x512 call with
   ``MMMILA_AUTOTUNE=1``, its share and the launch parameters it chose.
4. ``backbone_correctness``: the whole MILA-T backbone, Triton path and PyTorch path
   (``MMMILA_ATTN_BACKEND`` switching) against the PyTorch path in float64 (same weights and input),
   forward and backward, float32 (TF32 off) and bf16 autocast, 800x1280 batch 2: the four outputs and
   every parameter gradient; the Triton path may err at most twice as much as the PyTorch path.
5. ``op_speed``: forward and forward+backward at MILA-T's stage 1 for 800x1280 and 2048x2048:
   Triton, the PyTorch path and the authors' chain (``mmmila.bench.authors_attention``); achieved
   GB/s from the bytes of docs/kernels.md against the measured copy bandwidth.
6. ``backbone_speed``: forward and training step (bf16 autocast, batch 2, 800x1280) of MILA-T
   (Triton), MILA-T (PyTorch path), timm's Swin-T and ConvNeXt-T, with peak memory.
7. ``compile``: ``torch.compile`` of the backbone against eager, with graph breaks counted by
   dynamo's counters; runs once ``torch.ops.mmmila.linear_attention`` exists, and a failure is
   recorded, never raised.
8. ``compiled_speed``: MILA-T (Triton) and Swin-T, forward and training step, eager against
   ``torch.compile`` (inductor), with the compilation time (the compiled model's first call).
9. ``profile``: torch.profiler over MILA-T (Triton) eager training steps: the top ops by device
   time, the sum of all kernels' time against the step's wall time, kernel launches per step.
10. ``sweep``: the backbones of 6. at 512^2 ... 2048^2.

Timing: ``triton.testing.do_bench`` medians (warm-up excluded, L2 flushed before each call) on
CUDA; on CPU (``--dry-run``) a median of a few ``time.perf_counter`` calls. ``--dry-run`` forces
CPU, the Triton interpreter, tiny sizes and skips timm when it is absent; the test suite runs it.

The sections, the report and the staging are ``mmmila.bench.gpu_kit``; this file parses the
arguments and calls them. Before anything imports mmmila, the kit copies this working tree's
``mmmila/`` (with ``kernels/`` as ``mmmila.kernels``, as setup.py installs it) to a temporary folder and extracts every wheel of
``--wheels`` (default ``.gpu_wheels/``, filled by tools/prepare_gpu_wheels.sh) whose modules do not
import yet, and puts both first on ``sys.path``: no pip, no network, no install. ``cv2``, which
mmengine imports at import time but nothing here uses, becomes an empty placeholder module when
OpenCV is absent (its wheel alone would exceed what a device run can carry).

Exit status: 0 when every check that ran passed, 1 when one failed or a section raised, 2 for bad
arguments or (without --dry-run) no visible CUDA device.
"""
from __future__ import annotations

import argparse
import faulthandler
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def kit_module(name: str):
    """``mmmila/bench/gpu_kit/<name>.py`` of this checkout, loaded from its file.

    Only for the kit's modules that need the standard library alone (``plan``, ``staging``):
    importing them as ``mmmila.bench.gpu_kit.<name>`` would first run ``mmmila/__init__.py``, which
    needs mmengine, which on the GPU machine only the staging provides.
    """
    path = REPO / 'mmmila' / 'bench' / 'gpu_kit' / f'{name}.py'
    spec = importlib.util.spec_from_file_location(f'gpu_kit_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


plan = kit_module('plan')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', required=True, type=Path, help='folder for gpu_check.json, .md and .log')
    parser.add_argument('--dry-run', action='store_true',
                        help='CPU, Triton interpreter, tiny sizes: the same code paths, for the test suite')
    parser.add_argument('--budget-s', type=float, default=300.0,
                        help='stop starting sections after this many seconds (default: %(default)s)')
    parser.add_argument('--only', nargs='+', choices=plan.SECTIONS, metavar='SECTION',
                        help=f'run only these sections ({", ".join(plan.SECTIONS)}); env always runs')
    parser.add_argument('--seed', type=int, help='random seed (default: a fresh one, recorded)')
    parser.add_argument('--wheels', type=Path, default=REPO / '.gpu_wheels',
                        help='folder of carried wheels (default: .gpu_wheels/ of this checkout)')
    parser.add_argument('--inject-fault', choices=plan.FAULTS, help=argparse.SUPPRESS)  # the kit's own tests
    args = parser.parse_args(argv)
    if args.budget_s <= 0:
        parser.error(f'--budget-s must be positive, got {args.budget_s}')
    if args.out.exists() and not args.out.is_dir():
        parser.error(f'--out {args.out} exists and is not a folder')
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), 'little')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.monotonic()
    if args.dry_run:
        # The interpreter must be chosen before triton is first imported, and CUDA hidden.
        os.environ['TRITON_INTERPRET'] = '1'
        os.environ['CUDA_VISIBLE_DEVICES'] = ''
    args.out.mkdir(parents=True, exist_ok=True)
    # A hung section must not eat the machine's window: dump the stacks and exit past the budget.
    faulthandler.dump_traceback_later(args.budget_s + 90, exit=True, file=sys.stderr)
    stage_dir = Path(tempfile.mkdtemp(prefix='mmmila_gpu_check_'))
    staging = kit_module('staging').stage_imports(stage_dir, args.wheels, REPO)
    import torch

    from mmmila.bench.command import command_line
    from mmmila.bench.gpu_kit.report import Report
    from mmmila.bench.gpu_kit.run import log_to, run_sections
    log_to(args.out)
    print(f'gpu_check: staged mmmila and {len(staging["staged"])} wheel(s) into {stage_dir} '
          f'({len(staging["present"])} already importable)', flush=True)
    if not args.dry_run and not torch.cuda.is_available():
        print('gpu_check: ERROR: no CUDA device is visible to torch; use --dry-run on a CPU machine.',
              file=sys.stderr)
        return 2
    import mmmila
    if Path(mmmila.__file__).resolve().parent != (stage_dir / 'mmmila').resolve():
        raise RuntimeError(f'mmmila was imported from {mmmila.__file__}, not from the staged copy')
    command = command_line(Path(__file__).resolve(), sys.argv[1:] if argv is None else argv, REPO)
    report = Report(args.out, command, args.dry_run, args.budget_s, args.seed)
    run_sections(report, args.dry_run, args.seed, args.only, args.inject_fault, staging, start, args.budget_s)
    faulthandler.cancel_dump_traceback_later()
    shutil.rmtree(stage_dir, ignore_errors=True)
    return 1 if report.failed() else 0


if __name__ == '__main__':
    sys.exit(main())
