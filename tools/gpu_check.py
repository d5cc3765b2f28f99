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
3. ``backbone_correctness``: the whole MILA-T backbone, Triton path and PyTorch path
   (``MMMILA_ATTN_BACKEND`` switching) against the PyTorch path in float64 (same weights and input),
   forward and backward, float32 (TF32 off) and bf16 autocast, 800x1280 batch 2: the four outputs and
   every parameter gradient; the Triton path may err at most twice as much as the PyTorch path.
4. ``op_speed``: forward and forward+backward at MILA-T's stage 1 for 800x1280 and 2048x2048:
   Triton, the PyTorch path and the authors' chain (``mmmila.bench.authors_attention``); achieved
   GB/s from the bytes of docs/kernels.md against the measured copy bandwidth.
5. ``backbone_speed``: forward and training step (bf16 autocast, batch 2, 800x1280) of MILA-T
   (Triton), MILA-T (PyTorch path), timm's Swin-T and ConvNeXt-T, with peak memory.
6. ``compile``: ``torch.compile`` of the backbone against eager, with graph breaks counted by
   dynamo's counters; runs once ``torch.ops.mmmila.linear_attention`` exists, and a failure is
   recorded, never raised.
7. ``compiled_speed``: MILA-T (Triton) and Swin-T, forward and training step, eager against
   ``torch.compile`` (inductor), with the compilation time (the compiled model's first call).
8. ``profile``: torch.profiler over MILA-T (Triton) eager training steps: the top ops by device
   time, the sum of all kernels' time against the step's wall time, kernel launches per step.
9. ``sweep``: the backbones of 5. at 512^2 ... 2048^2.

Timing: ``triton.testing.do_bench`` medians (warm-up excluded, L2 flushed before each call) on
CUDA; on CPU (``--dry-run``) a median of a few ``time.perf_counter`` calls. ``--dry-run`` forces
CPU, the Triton interpreter, tiny sizes and skips timm when it is absent; the test suite runs it.

Before anything imports mmmila, the kit copies this working tree's ``mmmila/`` (with ``kernels/``
as ``mmmila.kernels``, as setup.py installs it) to a temporary folder and extracts every wheel of
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
import importlib
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
import types
import zipfile
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ('env', 'op_correctness', 'backbone_correctness', 'op_speed', 'backbone_speed', 'compile',
            'compiled_speed', 'profile', 'sweep')
CORRECTNESS_SECTIONS = ('op_correctness', 'backbone_correctness', 'compile')
# Relative error limits: max |actual - truth| / max |truth|.
OP_TOL = {'float32': 1e-4, 'bfloat16': 2e-2, 'float16': 2e-2}
# Whole backbone against its float64 run: the Triton path's relative RMS error may be 2 x the
# PyTorch path's + this floor (see section_backbone_correctness).
BACKBONE_FLOOR = {'float32': 1e-4, 'bf16-autocast': 1e-3}
COMPILE_TOL = 1e-3
# (sizes) of each mode: the real run and the dry run.
PLAN = {
    'gpu': dict(image=(800, 1280), batch=2, arch='tiny', op_speed_maps=((200, 320), (512, 512)),
                sweep=(512, 1024, 1536, 2048), op_extra=((3, (7, 11), 64, 2),), op_shapes=None),
    # Half MILA-T's widths and heads (head dim 32 as in MILA), one block per stage; of the op shapes
    # MILA-T's and MILA-B's first stage (C = 64 and 96).
    'dry': dict(image=(32, 48), batch=2,
                arch=dict(embed_dims=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8)),
                op_speed_maps=((6, 10), (8, 8)), sweep=(16,), op_extra=(), op_shapes=(0, 4)),
}
# Time each section needs at least on the H200 (a guess made before any GPU run, to skip a section
# rather than be killed in it); the dry run ignores these.
MIN_SECONDS = {'env': 5, 'op_correctness': 30, 'backbone_correctness': 40, 'op_speed': 30,
               'backbone_speed': 60, 'compile': 90, 'compiled_speed': 120, 'profile': 15,
               'sweep': 60}
TIMM_MODELS = {'Swin-T (timm)': 'swin_tiny_patch4_window7_224', 'ConvNeXt-T (timm)': 'convnext_tiny'}
FAULTS = ('scale', 'nan')


# ---- staging: this working tree and the carried wheels, without pip ------------------------------
def wheel_modules(wheel: zipfile.ZipFile) -> list[str]:
    """Top-level importable names of a wheel (packages and single-file modules)."""
    names = set()
    for entry in wheel.namelist():
        top = entry.split('/')[0]
        if top.endswith(('.dist-info', '.data')) or top.endswith('.pth'):
            continue
        if '/' in entry or top.endswith('.py') or '.cpython-' in top or top.endswith('.so'):
            names.add(top.split('.')[0])
    return sorted(names)


def importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


class Placeholder(types.ModuleType):
    """A module that imports but has nothing: any attribute use raises, naming why it is absent."""

    def __getattr__(self, attr):
        raise AttributeError(f'{self.__name__}.{attr}: {self.__name__} is not installed here; the GPU kit '
                             f'put an empty placeholder in its place ({PLACEHOLDERS[self.__name__]})')


# Modules that mmengine imports at import time but nothing the kit runs uses, with the reason.
PLACEHOLDERS = {'cv2': 'mmengine.runner imports mmengine.hooks, whose visualisation hook imports cv2; '
                       "OpenCV's 50 MB wheel would not fit the device run's carry limit"}


def stage_imports(stage: Path, wheels: Path) -> dict:
    """Copy mmmila (kernels included) under ``stage`` and extract the wheels that are needed.

    Returns:
        dict: ``staged`` (wheels extracted), ``present`` (wheels whose modules already import),
        ``path`` (the folders put first on ``sys.path``).
    """
    site = stage / 'site'
    site.mkdir(parents=True, exist_ok=True)
    staged, present = [], []
    for whl in sorted(wheels.glob('*.whl')) if wheels.is_dir() else []:
        with zipfile.ZipFile(whl) as zf:
            modules = wheel_modules(zf)
            if modules and all(importable(m) for m in modules):
                present.append(whl.name)
                continue
            zf.extractall(site)
            staged.append(whl.name)
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc')
    shutil.copytree(REPO / 'mmmila', stage / 'mmmila', ignore=ignore)
    shutil.copytree(REPO / 'kernels', stage / 'mmmila' / 'kernels', ignore=ignore)
    sys.path[:0] = [str(stage), str(site)]
    importlib.invalidate_caches()
    placeholders = [name for name in PLACEHOLDERS if not importable(name)]
    for name in placeholders:
        sys.modules[name] = Placeholder(name)
    return dict(staged=staged, present=present, placeholders=placeholders, path=[str(stage), str(site)])


# ---- results: JSON and markdown after every section ------------------------------------------------
class Report:
    """Collects the sections and writes ``gpu_check.json`` / ``gpu_check.md`` into ``out``."""

    def __init__(self, out: Path, args: argparse.Namespace):
        self.out = out
        self.data = dict(kit='tools/gpu_check.py', command=sys.argv, dry_run=args.dry_run,
                         started=datetime.now(timezone.utc).isoformat(timespec='seconds'),
                         budget_s=args.budget_s, seed=args.seed, sections={})

    def add(self, name: str, section: dict) -> None:
        self.data['sections'][name] = section
        self.write()

    def write(self) -> None:
        self.data['updated'] = datetime.now(timezone.utc).isoformat(timespec='seconds')
        tmp = self.out / 'gpu_check.json.tmp'
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.out / 'gpu_check.json')
        (self.out / 'gpu_check.md').write_text(markdown(self.data))

    def failed(self) -> list[str]:
        return [name for name, s in self.data['sections'].items() if s['status'] in ('fail', 'error')]


def _fmt(x, spec='.3g') -> str:
    if x is None:
        return '-'
    if isinstance(x, float):
        return format(x, spec) if math.isfinite(x) else str(x)
    return str(x)


def md_table(rows: list[dict], columns: list[str]) -> str:
    lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
    lines += ['| ' + ' | '.join(_fmt(r.get(c)) for c in columns) + ' |' for r in rows]
    return '\n'.join(lines)


SECTION_COLUMNS = {
    'op_correctness': ['shape', 'dtype', 'out', 'dqk', 'dv', 'limit', 'nan', 'ok'],
    'backbone_correctness': ['precision', 'outputs', 'output_limit', 'worst_param_grad', 'worst_param',
                             'limit', 'all_grads', 'all_grads_limit', 'torch_path_outputs',
                             'torch_path_worst_param_grad', 'triton_calls', 'torch_calls', 'ok'],
    'op_speed': ['map', 'dtype', 'mode', 'variant', 'ms', 'speedup_vs_authors', 'gb_s', 'of_copy_bw',
                 'peak_mb'],
    'backbone_speed': ['model', 'size', 'mode', 'ms', 'images_s', 'peak_mb', 'peak_above_start_mb', 'error'],
    'compiled_speed': ['model', 'size', 'mode', 'eager_ms', 'compiled_ms', 'compiled_speedup',
                       'compiled_first_call_s', 'eager_first_call_s', 'error'],
    'profile': ['op', 'ms_per_step', 'share', 'calls_per_step'],
    'sweep': ['model', 'size', 'mode', 'ms', 'images_s', 'peak_mb', 'peak_above_start_mb', 'error'],
}


def markdown(data: dict) -> str:
    env = data['sections'].get('env', {})
    lines = ['# mmmila GPU check' + (' (dry run on CPU)' if data['dry_run'] else ''), '',
             f"Started {data['started']}, last written {data['updated']}; command "
             f"`{' '.join(data['command'])}`; seed {data['seed']}.", '']
    if env:
        lines += [f"Machine: {env.get('device_name')}; torch {env.get('torch')}, triton "
                  f"{env.get('triton')}, CUDA {env.get('cuda')}, Python {env.get('python')}; "
                  f"copy bandwidth {_fmt(env.get('copy_gb_s'))} GB/s. Host: {env.get('machine')}.", '']
    for name, section in data['sections'].items():
        lines += [f'## {name}: {section["status"]}', '']
        if section.get('note'):
            lines += [section['note'], '']
        if section.get('error'):
            lines += ['```', section['error'].strip()[-3000:], '```', '']
        if section.get('rows') and name in SECTION_COLUMNS:
            lines += [md_table(section['rows'], SECTION_COLUMNS[name]), '']
        if name == 'compile' and section.get('result'):
            lines += ['```', json.dumps(section['result'], indent=1, default=str), '```', '']
    if 'summary' in data:
        lines += ['## Summary', '', md_table(data['summary'], ['item', 'value', 'target', 'met']), '']
    return '\n'.join(lines)


# ---- helpers that need torch (imported after staging) -----------------------------------------------
def torch_mod():
    import torch
    return torch


def sync(device) -> None:
    torch = torch_mod()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def median_ms(fn, device, dry: bool, rep_ms: int = 200, warmup_ms: int = 50,
              grad_to_none=None) -> float:
    """Median time of ``fn()`` in ms, warm-up excluded: do_bench on CUDA, perf_counter on CPU."""
    if device.type == 'cuda':
        from triton.testing import do_bench
        return float(do_bench(fn, warmup=warmup_ms, rep=rep_ms, grad_to_none=grad_to_none,
                              return_mode='median'))
    if not dry:
        fn()   # warm-up
    times = []
    for _ in range(1 if dry else 5):
        for t in grad_to_none or ():
            t.grad = None
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def peak_memory_mb(fn, device) -> tuple[float | None, float | None]:
    """(peak allocated during one ``fn()``, peak above what was allocated before it), MiB; CUDA only."""
    torch = torch_mod()
    if device.type != 'cuda':
        return None, None
    sync(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    peak = torch.cuda.max_memory_allocated(device)
    return peak / 2**20, (peak - base) / 2**20


def rel_err(actual, truth) -> float:
    """max |actual - truth| / max |truth| (NaN if actual has NaN)."""
    diff = (actual.double() - truth.double()).abs().max()
    return (diff / truth.double().abs().max().clamp_min(1e-30)).item()


def rel_rms(actual, truth) -> float:
    diff = (actual.double() - truth.double()).pow(2).mean().sqrt()
    return (diff / truth.double().pow(2).mean().sqrt().clamp_min(1e-30)).item()


@contextmanager
def attn_backend(name: str):
    """Route every 'auto' attention call to ``name`` through the documented environment variable."""
    from mmmila.ops import ENV_VAR
    old = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = old


def outputs_and_grads(fn, qk, v, g, before=None):
    """(out, dqk, dv) of ``fn`` on fresh leaves; ``before()`` runs once the leaves exist."""
    qk = qk.detach().clone().requires_grad_()
    v = v.detach().clone().requires_grad_()
    if before is not None:
        before()
    out = fn(qk, v)
    out.backward(g)
    return out.detach(), qk.grad, v.grad


def poison(device, specs) -> None:
    """Fill fresh blocks of the given (shape, dtype) with NaN and free them again.

    The CUDA caching allocator hands the same blocks to the next requests of those sizes, so an
    output element a kernel fails to write reads as NaN instead of an old, plausible value.
    """
    torch = torch_mod()
    blocks = [torch.full(shape, float('nan'), dtype=dtype, device=device) for shape, dtype in specs]
    sync(device)
    del blocks


def triton_op(fault: str | None):
    """The op under test: mmmila's public function with the Triton backend (plus a test fault)."""
    torch = torch_mod()
    from mmmila.ops import mila_linear_attention

    def op(qk, v, hw, num_heads):
        out = mila_linear_attention(qk, v, hw, num_heads, backend='triton')
        if fault == 'scale':      # a 1e-3 relative error: float32 must fail, 16-bit must pass
            out = out * (1 + 1e-3)
        elif fault == 'nan':      # the last token left unwritten
            out = torch.cat([out[:, :-1], torch.full_like(out[:, -1:], float('nan'))], dim=1)
        return out
    return op


# ---- sections ------------------------------------------------------------------------------------
def section_env(ctx) -> dict:
    torch = torch_mod()
    device = ctx['device']
    from mmmila.bench.machine import machine_line
    info = dict(machine=machine_line(device), python=platform.python_version(), platform=platform.platform(),
                torch=torch.__version__, cuda=torch.version.cuda, staging=ctx['staging'])
    try:
        import triton
        info['triton'] = triton.__version__
    except ImportError as err:
        info['triton'] = f'not importable: {err}'
    from mmmila.kernels import is_interpreted
    info['triton_interpreter'] = is_interpreted()
    if device.type == 'cuda':
        props = torch.cuda.get_device_properties(device)
        info.update(device_name=props.name, sm_count=props.multi_processor_count,
                    capability='%d.%d' % (props.major, props.minor),
                    memory_gib=round(props.total_memory / 2**30, 1))
    else:
        info['device_name'] = f'CPU ({platform.processor() or platform.machine()}), dry run'
    nbytes = (1 << 30) if device.type == 'cuda' else (1 << 22)
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), device, ctx['dry'])
    info['copy_bytes'] = nbytes
    info['copy_ms'] = ms
    info['copy_gb_s'] = 2 * nbytes / (ms * 1e-3) / 1e9   # read + write
    src = dst = None   # free the buffers
    ctx['copy_gb_s'] = info['copy_gb_s']
    return dict(status='ok', **info)


def op_shapes(ctx) -> list[tuple[int, tuple[int, int], int, int, str]]:
    """(B, (H, W), C, nh, label) of every distinct MILA-T/S/B stage at the plan's image size."""
    from mmmila.models.backbones import MILA
    plan, batch = ctx['plan'], ctx['plan']['batch']
    shapes, seen = [], {}
    for name in ('tiny', 'small', 'base'):
        arch = name[0].upper()
        embed, heads = MILA.arch_settings[name]['embed_dims'], MILA.arch_settings[name]['num_heads']
        for i, nh in enumerate(heads):   # strides 4, 8, 16, 32; widths double per stage
            stride = 4 * 2**i
            hw = (-(-plan['image'][0] // stride), -(-plan['image'][1] // stride))
            key = (hw, embed * 2**i, nh)
            if key in seen:
                seen[key].append(f'{arch}{i + 1}')
                continue
            seen[key] = [f'{arch}{i + 1}']
            shapes.append((batch, hw, embed * 2**i, nh, seen[key]))
    out = [(b, hw, c, nh, 'MILA-' + '/'.join(label)) for b, hw, c, nh, label in shapes]
    out += [(b, hw, c, nh, 'odd map') for b, hw, c, nh in plan['op_extra']]
    return [out[i] for i in plan['op_shapes']] if plan['op_shapes'] else out


def section_op_correctness(ctx) -> dict:
    torch = torch_mod()
    from mmmila.bench.float64_attention import attention_f64
    device, gen = ctx['device'], ctx['gen']
    op = triton_op(ctx['fault'])
    rows = []
    for batch, hw, channels, nh, label in op_shapes(ctx):
        n = hw[0] * hw[1]
        qk32 = torch.randn(batch, n, 2 * channels, generator=gen).to(device)
        v32 = torch.randn(batch, n, channels, generator=gen).to(device)
        g32 = torch.randn(batch, n, channels, generator=gen).to(device)
        for dtype_name in ('float32', 'bfloat16', 'float16'):
            dtype = getattr(torch, dtype_name)
            qk, v, g = qk32.to(dtype), v32.to(dtype), g32.to(dtype)
            truth = outputs_and_grads(lambda a, b: attention_f64(a, b, hw, nh), qk.double(), v.double(),
                                      g.double())
            # out, dqk, dv, twice over: blocks for whatever the op allocates in those sizes
            got = outputs_and_grads(lambda a, b: op(a, b, hw, nh), qk, v, g, before=lambda: poison(
                device, [(v.shape, dtype), (qk.shape, dtype), (v.shape, dtype)] * 2))
            errs = {name: rel_err(a, t) for name, a, t in zip(('out', 'dqk', 'dv'), got, truth)}
            has_nan = any(bool(torch.isnan(a).any()) for a in got)
            ok = (not has_nan and all(math.isfinite(e) and e <= OP_TOL[dtype_name] for e in errs.values())
                  and all(a.dtype == dtype for a in got))
            rows.append(dict(shape=f'{label} B={batch} {hw[0]}x{hw[1]} C={channels} nh={nh}', batch=batch,
                             hw=list(hw), channels=channels, heads=nh, dtype=dtype_name, **errs,
                             limit=OP_TOL[dtype_name], nan=has_nan, ok=ok))
            del truth, got
    status = 'ok' if all(r['ok'] for r in rows) else 'fail'
    return dict(status=status, rows=rows, note='relative error = max |kernel - float64 truth| / '
                'max |truth| of the output and of the gradients of qk and v.')


def build_mila(ctx):
    """MILA-T (the dry run: a small MILA, one block per stage), four outputs, no stochastic depth."""
    from mmmila.models.backbones import MILA
    model = MILA(arch=ctx['plan']['arch'], out_indices=(0, 1, 2, 3), drop_path_rate=0.0, attn_backend='auto')
    return model.to(ctx['device'])


def autocast(device, precision: str):
    torch = torch_mod()
    if precision == 'float32':
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def grad_errors(grads, ref) -> dict[str, float]:
    """Relative RMS error of each parameter gradient against ``ref``.

    Each gradient is measured on its own scale, or on that of all gradients together when it is
    smaller: a conv bias before BatchNorm has a gradient of pure round-off, whose relative error
    means nothing (the op's check uses max |truth| likewise).
    """
    rms = {n: ref[n].double().pow(2).mean().sqrt().item() for n in ref}
    total = sum(g.numel() for g in ref.values())
    floor = math.sqrt(sum(r * r * ref[n].numel() for n, r in rms.items()) / total)
    return {n: (grads[n].double() - ref[n].double()).pow(2).mean().sqrt().item() / max(rms[n], floor)
            for n in ref if n in grads}


@contextmanager
def no_tf32():
    """Full float32 matmuls and convolutions (cuDNN convolutions default to TF32 on Ampere and later)."""
    torch = torch_mod()
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def whole_grad_error(grads, ref) -> float:
    """Relative RMS error of all parameter gradients taken as one vector."""
    num = sum((grads[n].double() - ref[n].double()).pow(2).sum().item() for n in ref if n in grads)
    den = sum(ref[n].double().pow(2).sum().item() for n in ref)
    return math.sqrt(num / max(den, 1e-300))


def section_backbone_correctness(ctx) -> dict:
    """MILA-T, Triton path and PyTorch path against the same model in float64, forward and backward.

    The truth is the PyTorch path run in float64 (a copy of the same weights, same input). Each path
    is measured against it in float32 (TF32 off) and under bf16 autocast, and the Triton path's error
    may be at most twice the PyTorch path's plus a floor (BACKBONE_FLOOR: 1e-4 in float32, 1e-3 in
    bf16; FlashAttention's rule for low-precision kernels): per output, for all gradients as one
    vector, and for each parameter against the PyTorch path's worst parameter. Comparing the two float32 paths with each
    other instead blames the kernel for the round-off of everything around it: a bias gradient that is
    a sum over 2x800x1280 pixels with cancellation differed by 1.4e-3 between the paths on the H200.
    """
    torch = torch_mod()
    import copy
    from collections import Counter

    from mmmila.bench.attention_calls import AttentionOpsSeen
    device, gen, plan = ctx['device'], ctx['gen'], ctx['plan']
    model = build_mila(ctx).train()
    x = torch.randn(plan['batch'], 3, *plan['image'], generator=gen).to(device)
    with torch.no_grad():
        weights = [torch.randn(o.shape, generator=gen).to(device) for o in model(x)]

    def run(net, inp, backend, precision):
        net.zero_grad(set_to_none=True)
        with attn_backend(backend), autocast(device, precision), AttentionOpsSeen() as calls:
            outs = net(inp)
        loss = sum((o.to(w.dtype) * w).sum() for o, w in zip(outs, weights))
        loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in net.named_parameters() if p.grad is not None}
        return [o.detach().to(w.dtype) for o, w in zip(outs, weights)], grads, Counter(calls.seen)

    ref = copy.deepcopy(model).double()
    weights = [w.double() for w in weights]
    ref_outs, ref_grads, _ = run(ref, x.double(), 'torch', 'float32')
    del ref
    weights = [w.float() for w in weights]
    rows = []
    with no_tf32():
        for precision in ('float32', 'bf16-autocast'):
            outs_t, grads_t, counts_t = run(model, x, 'triton', precision)
            outs_p, grads_p, counts_p = run(model, x, 'torch', precision)
            floor = BACKBONE_FLOOR[precision]
            out_err = [rel_rms(a, b) for a, b in zip(outs_t, ref_outs)]
            param_errs = grad_errors(grads_t, ref_grads)
            torch_out = [rel_rms(a, b) for a, b in zip(outs_p, ref_outs)]
            torch_param = grad_errors(grads_p, ref_grads)
            limit = [2 * e + floor for e in torch_out]
            # Which parameter's gradient suffers most from round-off is chance (sums with
            # cancellation, e.g. the bias of a BatchNorm followed by another): every parameter is
            # held to the PyTorch path's worst, and all gradients together to 2 x its error.
            param_limit = {n: 2 * max(torch_param.values()) + floor for n in param_errs}
            all_err, torch_all = whole_grad_error(grads_t, ref_grads), whole_grad_error(grads_p, ref_grads)
            # the parameter closest to (or furthest over) its limit
            worst = max(param_errs, key=lambda n: param_errs[n] / param_limit[n]
                        if math.isfinite(param_errs[n]) else math.inf)
            worst_out = max(range(len(out_err)), key=lambda i: out_err[i] / limit[i])
            missing = sorted((set(grads_p) ^ set(grads_t)) | (set(ref_grads) ^ set(grads_t)))
            finite = all(math.isfinite(e) for e in out_err + list(param_errs.values()))
            ok = (finite and not missing and all(e <= lim for e, lim in zip(out_err, limit))
                  and all(param_errs[n] <= param_limit[n] for n in param_errs)
                  and all_err <= 2 * torch_all + floor
                  and counts_t.get('triton', 0) > 0 and counts_t.get('torch', 0) == 0
                  and counts_p.get('torch', 0) > 0 and counts_p.get('triton', 0) == 0)
            rows.append(dict(precision=precision, outputs=out_err[worst_out], output_limit=limit[worst_out],
                             worst_param_grad=param_errs[worst], worst_param=worst, limit=param_limit[worst],
                             all_grads=all_err, all_grads_limit=2 * torch_all + floor, torch_path_all_grads=torch_all,
                             torch_path_outputs=torch_out[worst_out],
                             torch_path_worst_param_grad=max(torch_param.values()),
                             params=len(param_errs), missing_grads=missing,
                             triton_calls=counts_t.get('triton', 0), torch_calls=counts_p.get('torch', 0),
                             finite=finite, ok=ok))
    return dict(status='ok' if all(r['ok'] for r in rows) else 'fail', rows=rows,
                image=list(plan['image']), batch=plan['batch'],
                note='relative RMS error against the PyTorch path in float64 (same weights and input) of '
                     'the four outputs (worst against its limit shown) and of each parameter gradient '
                     '(worst against its limit shown; a gradient whose RMS is below that of all gradients '
                     'together, e.g. the round-off gradient of a conv bias before BatchNorm, is measured '
                     'on the latter), and of all gradients as one vector (all_grads). The Triton path\'s '
                     'limits: per output and for all_grads 2 x the PyTorch path\'s error (same precision), '
                     'per parameter 2 x the PyTorch path\'s worst parameter error, each + '
                     f"{BACKBONE_FLOOR['float32']} (float32, TF32 off) or {BACKBONE_FLOOR['bf16-autocast']} "
                     '(bf16 autocast). The calls columns count the attention calls each implementation ran.')


def authors_chain(hw, channels, device):
    """The authors' attention chain at this map (``mmmila.bench.authors_attention``).

    Its RoPE works in float32 (complex numbers), so with 16-bit inputs it runs under autocast to the
    inputs' dtype, as in the authors' mixed-precision training.
    """
    torch = torch_mod()
    from mmmila.bench.authors_attention import authors_attention, authors_table, complex_rope
    rope = complex_rope(authors_table(hw, channels, device))

    def chain(qk, v, nh):
        if qk.dtype == torch.float32:
            return authors_attention(qk, v, hw, nh, rope)
        with torch.autocast(device.type, dtype=qk.dtype):
            return authors_attention(qk, v, hw, nh, rope)
    return chain


def section_op_speed(ctx) -> dict:
    torch = torch_mod()
    from mmmila.bench.traffic import fused_bytes
    from mmmila.ops import mila_linear_attention
    device, gen, dry = ctx['device'], ctx['gen'], ctx['dry']
    channels, nh, batch = 64, 2, 1          # MILA-T stage 1
    rows = []
    for hw in ctx['plan']['op_speed_maps']:
        n = hw[0] * hw[1]
        variants = {
            'triton': lambda qk, v, nh, hw=hw: mila_linear_attention(qk, v, hw, nh, backend='triton'),
            'torch': lambda qk, v, nh, hw=hw: mila_linear_attention(qk, v, hw, nh, backend='torch'),
            'authors': authors_chain(hw, channels, device),
        }
        for dtype_name in ('bfloat16', 'float32'):
            dtype = getattr(torch, dtype_name)
            qk = torch.randn(batch, n, 2 * channels, generator=gen).to(device, dtype)
            v = torch.randn(batch, n, channels, generator=gen).to(device, dtype)
            g = torch.randn(batch, n, channels, generator=gen).to(device, dtype)
            leaves = [qk.clone().requires_grad_(), v.clone().requires_grad_()]
            for mode in ('fwd', 'fwd+bwd'):
                times = {}
                for name, fn in variants.items():
                    if mode == 'fwd':
                        def call(fn=fn):
                            with torch.no_grad():
                                fn(qk, v, nh)
                    else:
                        def call(fn=fn):
                            fn(*leaves, nh).backward(g)
                    times[name] = median_ms(call, device, dry, grad_to_none=leaves)
                    peak, _ = peak_memory_mb(call, device)
                    fwd_bytes, bwd_bytes = fused_bytes(batch * n, channels, qk.element_size())
                    nbytes = fwd_bytes + (bwd_bytes if mode == 'fwd+bwd' else 0)
                    gbs = nbytes / (times[name] * 1e-3) / 1e9
                    rows.append(dict(map=f'{hw[0]}x{hw[1]}', n=n, dtype=dtype_name, mode=mode, variant=name,
                                     ms=times[name], bytes=nbytes, gb_s=gbs,
                                     of_copy_bw=gbs / ctx['copy_gb_s'] if ctx.get('copy_gb_s') else None,
                                     peak_mb=peak))
                for row in rows[-len(variants):]:
                    row['speedup_vs_authors'] = times['authors'] / row['ms']
    return dict(status='ok', rows=rows, batch=batch, channels=channels, heads=nh,
                note='MILA-T stage 1 (C = 64, 2 heads, B = 1); authors = the authors\' chain '
                     '(mmmila.bench.authors_attention; under autocast for 16-bit inputs). gb_s = the fused '
                     'kernels\' bytes (mmmila.bench.traffic.fused_bytes, docs/kernels.md: 4 C elements per '
                     'token forward, 7 C backward) / median time, for every variant; of_copy_bw = gb_s / '
                     'measured copy bandwidth.')


def model_steps(model, x, opt, device, no_grad=None) -> dict:
    """The two measured calls of a model on ``x``, both under bf16 autocast: 'forward' (under
    ``no_grad``, default ``torch.inference_mode``) and 'train step' (forward, mean of each output,
    backward, ``opt`` step). The caller sets the model's train/eval mode."""
    torch = torch_mod()
    no_grad = no_grad or torch.inference_mode

    def forward():
        with no_grad(), autocast(device, 'bf16'):
            model(x)

    def train_step():
        with autocast(device, 'bf16'):
            outs = model(x)
        sum(o.float().mean() for o in outs).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return {'forward': forward, 'train step': train_step}


def model_factories(ctx, size_hw):
    """{label: (factory, backend or None)}; timm models only when timm imports."""
    device = ctx['device']
    factories = {'MILA-T (Triton)': (lambda: build_mila(ctx), 'triton'),
                 'MILA-T (PyTorch path)': (lambda: build_mila(ctx), 'torch')}
    skipped = None
    try:
        import timm
    except ImportError as err:
        skipped = f'timm is not importable ({err}): Swin-T and ConvNeXt-T skipped'
    else:
        for label, name in TIMM_MODELS.items():
            kwargs = dict(img_size=size_hw) if 'swin' in name else {}
            factories[label] = (lambda name=name, kwargs=kwargs: timm.create_model(
                name, pretrained=False, features_only=True, **kwargs).to(device), None)
    return factories, skipped


def measure_models(ctx, sizes: list[tuple[int, int]], deadline: float) -> tuple[list[dict], list[str]]:
    """Forward and training step (bf16 autocast) of each model at each size; errors become rows."""
    torch = torch_mod()
    device, dry, batch, gen = ctx['device'], ctx['dry'], ctx['plan']['batch'], ctx['gen']
    rows, notes = [], []
    for size_hw in sizes:
        factories, skipped = model_factories(ctx, size_hw)
        if skipped:
            notes.append(skipped)
        x = torch.randn(batch, 3, *size_hw, generator=gen).to(device)
        for label, (factory, backend) in factories.items():
            if time.monotonic() > deadline:
                notes.append(f'time budget reached before {label} at {size_hw[0]}x{size_hw[1]}')
                continue
            model = opt = None
            try:
                model = factory()
                opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
                with attn_backend(backend) if backend else nullcontext():
                    for mode, fn in model_steps(model, x, opt, device).items():
                        model.train(mode == 'train step')
                        if not dry:
                            fn()   # warm-up and optimizer state
                        peak, above = peak_memory_mb(fn, device)
                        ms = median_ms(fn, device, dry, rep_ms=1000, warmup_ms=200)
                        rows.append(dict(model=label, size=f'{size_hw[0]}x{size_hw[1]}', mode=mode,
                                         batch=batch, ms=ms, images_s=batch / (ms * 1e-3), peak_mb=peak,
                                         peak_above_start_mb=above))
            except Exception as err:  # noqa: BLE001  (one model failing must not stop the others)
                rows.append(dict(model=label, size=f'{size_hw[0]}x{size_hw[1]}', mode='-',
                                 error=f'{type(err).__name__}: {err}'[:500]))
            finally:
                model = opt = None   # free before the next model
                if device.type == 'cuda':
                    torch.cuda.empty_cache()
    return rows, sorted(set(notes))


def _models_section(rows, notes, what):
    status = 'error' if any('error' in r for r in rows) else 'ok'
    return dict(status=status, rows=rows, note=f'{what}; bf16 autocast; forward in eval mode under '
                'inference_mode, training step = forward, mean of each output, backward, AdamW step. '
                'peak_mb = peak allocated during one call (weights and optimizer state included), '
                'peak_above_start_mb = above what was allocated before it. ' + ' '.join(notes))


def section_backbone_speed(ctx) -> dict:
    plan = ctx['plan']
    rows, notes = measure_models(ctx, [plan['image']], ctx['deadline'])
    return _models_section(rows, notes, f"batch {plan['batch']} at {plan['image'][0]}x{plan['image'][1]}")


def section_sweep(ctx) -> dict:
    plan = ctx['plan']
    rows, notes = measure_models(ctx, [(s, s) for s in plan['sweep']], ctx['deadline'])
    return _models_section(rows, notes, f"batch {plan['batch']}, square inputs")


def compile_ready() -> str | None:
    """Why the compile check cannot run yet, or None."""
    torch = torch_mod()
    import mmmila.ops  # noqa: F401  (registers the operator once it exists)
    try:
        torch.ops.mmmila.linear_attention
    except (AttributeError, RuntimeError):
        return ('torch.ops.mmmila.linear_attention is not registered (the issue "MILA\'s attention as a '
                'first-class PyTorch operator" has not landed): the compile check is skipped')
    return None


def section_compile(ctx) -> dict:
    """``torch.compile`` of MILA-T, forward and backward, against eager; graph breaks counted.

    Graph breaks are read from dynamo's counters during the compiled call (one trace, no separate
    ``explain`` pass). CUDA: inductor. Dry run: dynamo with the eager backend (no C++ builds on CPU).
    """
    torch = torch_mod()
    reason = compile_ready()
    if reason:
        return dict(status='skipped', note=reason)
    from torch._dynamo.utils import counters
    device, gen, plan = ctx['device'], ctx['gen'], ctx['plan']
    backend = 'inductor' if device.type == 'cuda' else 'eager'
    result = dict(backend=backend)
    try:
        model = build_mila(ctx).train()
        x = torch.randn(plan['batch'], 3, *plan['image'], generator=gen).to(device)
        torch._dynamo.reset()
        counters.clear()
        compiled = torch.compile(model, backend=backend)
        runs = {}
        for name, fn in (('eager', model), ('compiled', compiled)):
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            out = fn(x)
            sum(o.float().mean() for o in out).backward()
            sync(device)
            result[f'{name}_first_call_s'] = time.perf_counter() - start
            grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
            runs[name] = ([o.detach().float() for o in out], grads)
        breaks = counters['graph_break']
        result.update(graph_break_count=sum(breaks.values()),
                      break_reasons=[str(r)[:300] for r in list(breaks)[:10]],
                      unique_graphs=counters['stats'].get('unique_graphs'))
        (outs_c, grads_c), (outs_e, grads_e) = runs['compiled'], runs['eager']
        result['output_rel_rms'] = max(rel_rms(a, b) for a, b in zip(outs_c, outs_e))
        errs = grad_errors(grads_c, grads_e)
        result['worst_param'] = max(errs, key=errs.get)
        result['grad_rel_rms'] = errs[result['worst_param']]
        result['missing_grads'] = sorted(set(grads_c) ^ set(grads_e))
        ok = (result['graph_break_count'] == 0 and not result['missing_grads']
              and result['output_rel_rms'] <= COMPILE_TOL and result['grad_rel_rms'] <= COMPILE_TOL)
        return dict(status='ok' if ok else 'fail', result=result,
                    note=f'float32, training mode; limit {COMPILE_TOL} relative RMS on outputs and parameter '
                         'gradients (measured as in backbone_correctness), no graph break.')
    except Exception as err:  # noqa: BLE001  (recorded, never raised)
        result['error'] = f'{type(err).__name__}: {err}'[:2000]
        return dict(status='fail', result=result, note='torch.compile raised; see result.error.')


def section_compiled_speed(ctx) -> dict:
    """Eager against ``torch.compile`` (inductor; the dry run: dynamo's eager backend) for MILA-T
    (Triton path) and timm's Swin-T: forward and training step, bf16 autocast, at the plan's size.

    Why: in eager mode on the H200 MILA-T's time hardly grows with the input (host-bound: each
    forward dispatches hundreds of small ops). Compilation removes most of that host work; this
    section says how much, and what the compilation costs (first call of each mode).
    """
    torch = torch_mod()
    reason = compile_ready()
    if reason:
        return dict(status='skipped', note=reason)
    device, dry, plan, gen = ctx['device'], ctx['dry'], ctx['plan'], ctx['gen']
    backend = 'eager' if dry else 'inductor'
    batch, size_hw = plan['batch'], tuple(plan['image'])
    factories, skipped = model_factories(ctx, size_hw)
    wanted = ['MILA-T (Triton)', 'Swin-T (timm)']
    x = torch.randn(batch, 3, *size_hw, generator=gen).to(device)
    rows, notes = [], [skipped] if skipped else []
    for label in [w for w in wanted if w in factories]:
        factory, attn = factories[label]
        for mode in ('forward', 'train step'):
            if time.monotonic() > ctx['deadline']:
                notes.append(f'time budget reached before {label} {mode}')
                continue
            model = opt = None
            try:
                torch._dynamo.reset()
                model = factory().train(mode == 'train step')
                opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
                compiled = torch.compile(model, backend=backend)
                row = dict(model=label, size=f'{size_hw[0]}x{size_hw[1]}', mode=mode, batch=batch,
                           backend=backend)
                with attn_backend(attn) if attn else nullcontext():
                    for kind, net in (('eager', model), ('compiled', compiled)):
                        step = model_steps(net, x, opt, device, no_grad=torch.no_grad)[mode]
                        sync(device)
                        start = time.perf_counter()
                        step()
                        sync(device)
                        row[f'{kind}_first_call_s'] = time.perf_counter() - start
                        row[f'{kind}_ms'] = median_ms(step, device, dry, rep_ms=1000, warmup_ms=200)
                row['compiled_speedup'] = row['eager_ms'] / row['compiled_ms']
                rows.append(row)
            except Exception as err:  # noqa: BLE001  (one model failing must not stop the others)
                rows.append(dict(model=label, size=f'{size_hw[0]}x{size_hw[1]}', mode=mode,
                                 error=f'{type(err).__name__}: {err}'[:1000]))
            finally:
                model = opt = compiled = None
                if device.type == 'cuda':
                    torch.cuda.empty_cache()
    torch._dynamo.reset()
    status = 'error' if any('error' in r for r in rows) or not rows else 'ok'
    return dict(status=status, rows=rows,
                note=f'batch {batch}, bf16 autocast; {backend} with default options; forward in eval mode '
                     'under no_grad, training step = forward, mean of each output, backward, AdamW step '
                     '(the optimizer not compiled). first_call_s of the compiled model is its compilation. '
                     + ' '.join(notes))


def section_profile(ctx) -> dict:
    """Where a MILA-T (Triton) eager training step spends its time: torch.profiler, bf16 autocast.

    The device time of the kernels (self time, summed per op name, per step) and the step's wall
    time: when the kernels' sum is well below the wall time, the step is bound by the host (Python
    and dispatch of many small ops), not by the GPU.
    """
    torch = torch_mod()
    from torch.profiler import ProfilerActivity, profile
    device, plan, gen, dry = ctx['device'], ctx['plan'], ctx['gen'], ctx['dry']
    model = build_mila(ctx).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(plan['batch'], 3, *plan['image'], generator=gen).to(device)
    step = model_steps(model, x, opt, device)['train step']
    steps = 1 if dry else 3
    with attn_backend('triton'):
        step()
        step()   # warm-up: kernels compiled, optimizer state made
        sync(device)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
        start = time.perf_counter()
        with profile(activities=activities) as prof:
            for _ in range(steps):
                step()
            sync(device)
        wall_ms = (time.perf_counter() - start) * 1e3 / steps
    events = prof.key_averages()

    def device_us(e):
        for name in ('self_device_time_total', 'self_cuda_time_total'):
            if hasattr(e, name):
                return getattr(e, name)
        return 0.0
    timed = [(device_us(e) if device.type == 'cuda' else e.self_cpu_time_total, e) for e in events]
    total_us = sum(t for t, _ in timed)
    top = sorted(timed, key=lambda te: -te[0])[:25]
    rows = [dict(op=e.key[:90], ms_per_step=t / 1e3 / steps, share=t / max(total_us, 1e-9),
                 calls_per_step=e.count / steps) for t, e in top]
    what = 'device (CUDA kernel) self time' if device.type == 'cuda' else 'CPU self time'
    launches = sum(e.count for e in events if e.key.startswith(('cudaLaunchKernel', 'cuLaunchKernel')))
    return dict(status='ok', rows=rows, wall_ms_per_step=wall_ms, timed_ms_per_step=total_us / 1e3 / steps,
                kernel_launches_per_step=launches / steps, image=list(plan['image']), batch=plan['batch'],
                note=f'MILA-T (Triton path), eager training step (forward, mean of each output, backward, '
                     f'AdamW), bf16 autocast, batch {plan["batch"]} at {plan["image"][0]}x{plan["image"][1]}; '
                     f'{steps} profiled steps after 2 warm-up steps. Top 25 ops by {what} per step. '
                     f'Per step: wall {wall_ms:.1f} ms (under the profiler), {what} summed over all ops '
                     f'{total_us / 1e3 / steps:.1f} ms, {launches / steps:.0f} kernel launches.')


SECTION_FUNCS = {'env': section_env, 'op_correctness': section_op_correctness,
                 'backbone_correctness': section_backbone_correctness, 'op_speed': section_op_speed,
                 'backbone_speed': section_backbone_speed, 'compile': section_compile,
                 'compiled_speed': section_compiled_speed, 'profile': section_profile, 'sweep': section_sweep}


# ---- summary -------------------------------------------------------------------------------------
def summary(data: dict) -> list[dict]:
    """The short table printed last: one line per section, then the issue's targets."""
    sections = data['sections']
    def met(name, status):   # only checks that ran can be met or not
        return status == 'ok' if name in CORRECTNESS_SECTIONS and status != 'skipped' else None
    rows = [dict(item=f'section {name}', value=s['status'], target='ok' if name in CORRECTNESS_SECTIONS
                 else '-', met=met(name, s['status'])) for name, s in sections.items()]
    speed = sections.get('op_speed', {}).get('rows', [])
    big = [r for r in speed if r['dtype'] == 'bfloat16' and r['mode'] == 'fwd+bwd'
           and r['map'] == '%dx%d' % tuple(PLAN['dry' if data['dry_run'] else 'gpu']['op_speed_maps'][-1])]
    tri = next((r for r in big if r['variant'] == 'triton'), None)
    if tri is not None:
        up = tri.get('speedup_vs_authors')
        rows.append(dict(item=f"op fwd+bwd bf16 {tri['map']}: Triton vs authors' chain", value=up,
                         target='>= 10x', met=None if up is None else up >= 10))
        frac = tri.get('of_copy_bw')
        rows.append(dict(item=f"op fwd+bwd bf16 {tri['map']}: share of copy bandwidth", value=frac,
                         target='>= 0.5', met=None if frac is None else frac >= 0.5))
    models = {(r['model'], r['mode']): r for r in sections.get('backbone_speed', {}).get('rows', [])
              if 'error' not in r}
    mila, swin = models.get(('MILA-T (Triton)', 'train step')), models.get(('Swin-T (timm)', 'train step'))
    if mila and swin:
        rows.append(dict(item='train step: MILA-T (Triton) / Swin-T time', value=mila['ms'] / swin['ms'],
                         target='<= 1', met=mila['ms'] <= swin['ms']))
        if mila.get('peak_mb') and swin.get('peak_mb'):
            rows.append(dict(item='train step: MILA-T (Triton) / Swin-T peak memory',
                             value=mila['peak_mb'] / swin['peak_mb'], target='< 1',
                             met=mila['peak_mb'] < swin['peak_mb']))
    compiled = {(r['model'], r['mode']): r for r in sections.get('compiled_speed', {}).get('rows', [])
                if 'error' not in r}
    mila, swin = compiled.get(('MILA-T (Triton)', 'train step')), compiled.get(('Swin-T (timm)', 'train step'))
    if mila and swin:
        rows.append(dict(item='train step, both compiled: MILA-T (Triton) / Swin-T time',
                         value=mila['compiled_ms'] / swin['compiled_ms'], target='<= 1',
                         met=mila['compiled_ms'] <= swin['compiled_ms']))
    return rows


# ---- main ----------------------------------------------------------------------------------------
class Tee:
    """Write to the terminal and to the log file in ``--out``."""

    def __init__(self, stream, path: Path):
        self.stream, self.file = stream, open(path, 'a', buffering=1)

    def write(self, text):
        self.stream.write(text)
        self.file.write(text)

    def flush(self):
        self.stream.flush()
        self.file.flush()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', required=True, type=Path, help='folder for gpu_check.json, .md and .log')
    parser.add_argument('--dry-run', action='store_true',
                        help='CPU, Triton interpreter, tiny sizes: the same code paths, for the test suite')
    parser.add_argument('--budget-s', type=float, default=300.0,
                        help='stop starting sections after this many seconds (default: %(default)s)')
    parser.add_argument('--only', nargs='+', choices=SECTIONS, metavar='SECTION',
                        help=f'run only these sections ({", ".join(SECTIONS)}); env always runs')
    parser.add_argument('--seed', type=int, help='random seed (default: a fresh one, recorded)')
    parser.add_argument('--wheels', type=Path, default=REPO / '.gpu_wheels',
                        help='folder of carried wheels (default: %(default)s)')
    parser.add_argument('--inject-fault', choices=FAULTS, help=argparse.SUPPRESS)  # the kit's own tests
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
    sys.stdout = Tee(sys.stdout, args.out / 'gpu_check.log')
    # A hung section must not eat the machine's window: dump the stacks and exit past the budget.
    faulthandler.dump_traceback_later(args.budget_s + 90, exit=True, file=sys.stderr)
    stage_dir = Path(tempfile.mkdtemp(prefix='mmmila_gpu_check_'))
    staging = stage_imports(stage_dir, args.wheels)
    print(f'gpu_check: staged mmmila from {REPO} and {len(staging["staged"])} wheel(s) into {stage_dir} '
          f'({len(staging["present"])} already importable)', flush=True)
    torch = torch_mod()
    if not args.dry_run and not torch.cuda.is_available():
        print('gpu_check: ERROR: no CUDA device is visible to torch; use --dry-run on a CPU machine.',
              file=sys.stderr)
        return 2
    import mmmila
    if Path(mmmila.__file__).resolve().parent != (stage_dir / 'mmmila').resolve():
        raise RuntimeError(f'mmmila was imported from {mmmila.__file__}, not from the staged copy')
    report = Report(args.out, args)
    ctx = dict(device=torch.device('cpu' if args.dry_run else 'cuda'), dry=args.dry_run,
               plan=PLAN['dry' if args.dry_run else 'gpu'], staging=staging, fault=args.inject_fault,
               gen=torch.Generator().manual_seed(args.seed), deadline=start + args.budget_s)
    wanted = ['env'] + [s for s in SECTIONS if s != 'env' and (not args.only or s in args.only)]
    for name in wanted:
        left = ctx['deadline'] - time.monotonic()
        if not args.dry_run and left < MIN_SECONDS[name]:
            report.add(name, dict(status='skipped', note=f'{left:.0f} s of the budget left, the section '
                                  f'needs about {MIN_SECONDS[name]} s'))
            continue
        t0 = time.monotonic()
        # Every section draws its weights and inputs from the seed alone, whichever sections ran before.
        torch.manual_seed(args.seed)
        ctx['gen'] = torch.Generator().manual_seed(args.seed)
        print(f'gpu_check: [{time.monotonic() - start:6.1f} s] {name} ...', flush=True)
        try:
            section = SECTION_FUNCS[name](ctx)
        except Exception:  # noqa: BLE001  (recorded; the next sections still run)
            section = dict(status='error', error=traceback.format_exc())
        section['seconds'] = round(time.monotonic() - t0, 2)
        report.add(name, section)
        print(f'gpu_check: [{time.monotonic() - start:6.1f} s] {name}: {section["status"]}', flush=True)
        if name == 'env' and section['status'] == 'ok':
            print(f"gpu_check: {section['device_name']}; torch {section['torch']}, "
                  f"triton {section['triton']}, CUDA {section['cuda']}, Python {section['python']}; "
                  f"device copy {section['copy_gb_s']:.1f} GB/s; host {section['machine']}", flush=True)
    report.data['summary'] = summary(report.data)
    report.data['total_s'] = round(time.monotonic() - start, 1)
    report.write()
    faulthandler.cancel_dump_traceback_later()
    shutil.rmtree(stage_dir, ignore_errors=True)
    print(f'\ngpu_check: results in {args.out}/gpu_check.json and gpu_check.md '
          f'({report.data["total_s"]} s)\n')
    print(md_table(report.data['summary'], ['item', 'value', 'target', 'met']))
    return 1 if report.failed() else 0


if __name__ == '__main__':
    sys.exit(main())
