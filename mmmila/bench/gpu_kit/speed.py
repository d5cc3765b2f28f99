"""The GPU kit's measuring sections: the op's speed (``op_speed``), the backbones' speed and memory
(``backbone_speed``, ``sweep``), eager against torch.compile (``compiled_speed``) and where a
training step spends its time (``profile``)."""
from __future__ import annotations

import time

import torch

from mmmila.bench.gpu_kit.common import attn_backend, build_mila, compile_ready, env_var, free, median_ms
from mmmila.bench.launches import count_launches
from mmmila.bench.memory import peak_memory
from mmmila.bench.models import build_backbone, label
from mmmila.bench.steps import model_step
from mmmila.bench.timing import first_call_s, sync

# The comparison backbones of mmmila.bench.models that the kit measures beside MILA-T (from timm:
# the GPU image has it, not mmpretrain).
COMPARED = ('swin-t', 'convnext-t')
MODES = ('forward', 'train step')


def _mb(nbytes):
    return None if nbytes is None else nbytes / 2**20


def authors_chain(hw, channels, device):
    """The authors' attention chain at this map (``mmmila.bench.authors_attention``).

    Its RoPE works in float32 (complex numbers), so with 16-bit inputs it runs under autocast to the
    inputs' dtype, as in the authors' mixed-precision training.
    """
    from mmmila.bench.authors_attention import authors_attention, authors_table, complex_rope
    rope = complex_rope(authors_table(hw, channels, device))

    def chain(qk, v, nh):
        if qk.dtype == torch.float32:
            return authors_attention(qk, v, hw, nh, rope)
        with torch.autocast(device.type, dtype=qk.dtype):
            return authors_attention(qk, v, hw, nh, rope)
    return chain


def op_call(fn, qk, v, g, leaves, nh, mode):
    """One timed call of an attention variant: 'fwd' under no_grad on ``qk``, ``v``; 'fwd+bwd' on the
    leaf copies ``leaves``, back-propagating ``g`` (their ``.grad`` reset by the timer)."""
    if mode == 'fwd':
        def call():
            with torch.no_grad():
                fn(qk, v, nh)
    else:
        def call():
            fn(*leaves, nh).backward(g)
    return call


def section_op_targets(ctx) -> dict:
    """The op's speed targets at MILA-T's stage 1, B = 1, bf16 (``attention_speed.target_rows``):
    forward+backward at 8x8 tokens within 100 us; at 512x512 tokens at least half the copy
    bandwidth (measured here, right before) and at least 10x the authors' chain. On CUDA, when time
    is left, the 512x512 call again with autotuning (``MMMILA_AUTOTUNE=1``): its time and choice."""
    from mmmila.bench.attention_speed import TARGET_STAGE, target_rows
    from mmmila.bench.gpu_kit.env import copy_bandwidth
    from mmmila.ops import mila_linear_attention
    device, gen, dry = ctx['device'], ctx['gen'], ctx['dry']
    channels, nh, batch = TARGET_STAGE['channels'], TARGET_STAGE['heads'], TARGET_STAGE['batch']
    tiny_map, big_map = ctx['plan']['target_maps']
    copy = copy_bandwidth(ctx)
    inputs = {}

    def time_ms(hw, variant, mode):
        if hw not in inputs:
            n = hw[0] * hw[1]
            qk, v, g = (torch.randn(batch, n, c, generator=gen).to(device, torch.bfloat16)
                        for c in (2 * channels, channels, channels))
            inputs[hw] = (qk, v, g, [qk.clone().requires_grad_(), v.clone().requires_grad_()])
        qk, v, g, leaves = inputs[hw]
        if variant == 'triton':
            def fn(a, b, heads):
                return mila_linear_attention(a, b, hw, heads, backend='triton')
        else:
            fn = authors_chain(hw, channels, device)
        return median_ms(ctx, op_call(fn, qk, v, g, leaves, nh, mode), grad_to_none=leaves)

    measured_on = ('CPU, Triton interpreter (dry run): not a measure of the targets' if dry
                   else torch.cuda.get_device_name(device))
    rows = target_rows(time_ms, copy['copy_gb_s'], tiny_map, big_map, judged=not dry,
                       measured_on=measured_on)
    section = dict(status='ok', rows=rows, **copy, channels=channels, heads=nh, batch=batch)
    if dry:
        section['autotune'] = 'not run: autotuning times candidates on CUDA only'
    elif ctx['deadline'] - time.monotonic() < 90:
        section['autotune'] = 'not run: less than 90 s of the budget left'
    else:
        section.update(autotuned_call(lambda: time_ms(big_map, 'triton', 'fwd+bwd'), big_map,
                                      copy['copy_gb_s'], measured_on))
        rows.append(section.pop('row'))
    section['note'] = (f'MILA-T stage 1 (C = {channels}, {nh} heads, B = {batch}), bf16 inputs, the public op '
                       "(mmmila.ops.mila_linear_attention, backend='triton'); authors = the authors' chain under "
                       'bf16 autocast. Share of copy bandwidth = (4C + 7C elements per token for forward + '
                       'backward, 4C forward alone, x 2 bytes) / median time / the copy bandwidth measured at '
                       f"the start of this section ({copy['copy_gb_s']:.1f} GB/s). Launch parameters: the "
                       'defaults of kernels/heuristics.py' + ('' if dry else '; the autotuned row after them')
                       + '.')
    return section


def autotuned_call(timed, hw, copy_gb_s: float, measured_on: str) -> dict:
    """``timed()`` (the median ms of the Triton op's forward+backward at ``hw``) with
    ``MMMILA_AUTOTUNE=1``, once to tune (its first call tunes both passes) and once to measure; the
    configurations chosen, and the row of the share of ``copy_gb_s`` it reaches."""
    from mmmila.bench.attention_speed import COPY_SHARE, copy_share
    from mmmila.kernels import tuning
    tuning.clear_cache()
    try:
        with env_var(tuning.ENV_VAR, '1'):
            start = time.monotonic()
            timed()
            tune_s = time.monotonic() - start
            ms = timed()
        chosen = {str(key[0]): vars(params) for key, params in tuning.tuned_choices().items()}
    finally:
        tuning.clear_cache()
    share = copy_share(hw, 'fwd+bwd', ms, copy_gb_s)
    row = dict(item='op fwd+bwd bf16 %dx%d tokens, autotuned: share of copy bandwidth' % hw, value=share,
               unit='of copy', target=f'>= {COPY_SHARE:g}', met=share >= COPY_SHARE,
               measured_on=measured_on)
    return dict(row=row, autotune=dict(seconds=round(tune_s, 1), fwd_bwd_ms=ms, chosen=chosen))


def section_op_speed(ctx) -> dict:
    """Forward and forward+backward at MILA-T's stage 1 for the plan's maps: Triton, the PyTorch path
    and the authors' chain; achieved GB/s from the bytes of docs/kernels.md against the copy bandwidth."""
    from mmmila.bench.traffic import fused_bytes
    from mmmila.ops import mila_linear_attention
    device, gen = ctx['device'], ctx['gen']
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
                    call = op_call(fn, qk, v, g, leaves, nh, mode)
                    times[name] = median_ms(ctx, call, grad_to_none=leaves)
                    peak = peak_memory(call, device) if device.type == 'cuda' else None
                    fwd_bytes, bwd_bytes = fused_bytes(batch * n, channels, qk.element_size())
                    nbytes = fwd_bytes + (bwd_bytes if mode == 'fwd+bwd' else 0)
                    gbs = nbytes / (times[name] * 1e-3) / 1e9
                    rows.append(dict(map=f'{hw[0]}x{hw[1]}', n=n, dtype=dtype_name, mode=mode, variant=name,
                                     ms=times[name], bytes=nbytes, gb_s=gbs,
                                     of_copy_bw=gbs / ctx['copy_gb_s'] if ctx.get('copy_gb_s') else None,
                                     peak_mb=_mb(peak.total) if peak else None))
                for row in rows[-len(variants):]:
                    row['speedup_vs_authors'] = times['authors'] / row['ms']
    return dict(status='ok', rows=rows, batch=batch, channels=channels, heads=nh,
                note='MILA-T stage 1 (C = 64, 2 heads, B = 1); authors = the authors\' chain '
                     '(mmmila.bench.authors_attention; under autocast for 16-bit inputs). gb_s = the fused '
                     'kernels\' bytes (mmmila.bench.traffic.fused_bytes, docs/kernels.md: 4 C elements per '
                     'token forward, 7 C backward) / median time, for every variant; of_copy_bw = gb_s / '
                     'measured copy bandwidth; peak_mb = the device\'s peak allocated memory during one call '
                     '(mmmila.bench.memory.peak_memory: total; CUDA only).')


def model_factories(ctx, size_hw):
    """{label: (factory, attention backend or None)}: MILA-T on each path, then the compared backbones
    from timm when it imports (else a note saying they were skipped)."""
    device = ctx['device']
    factories = {'MILA-T (Triton)': (lambda: build_mila(ctx), 'triton'),
                 'MILA-T (PyTorch path)': (lambda: build_mila(ctx), 'torch')}
    skipped = None
    try:
        import timm  # noqa: F401
    except ImportError as err:
        skipped = f'timm is not importable ({err}): Swin-T and ConvNeXt-T skipped'
    else:
        for name in COMPARED:
            factories[label(name, 'timm')] = (
                lambda name=name: build_backbone(name, 'timm', image_size=size_hw).to(device), None)
    return factories, skipped


def _kit_step(model, x, mode, opt, no_grad=torch.inference_mode):
    """The kit's calls: bf16 autocast; 'forward' or 'train step' (AdamW)."""
    return model_step(model, x, mode, optimizer=opt, autocast=torch.bfloat16, no_grad=no_grad)


def _out_of_time(ctx, notes: list[str], what: str) -> bool:
    """Whether the kit's time budget is spent; if so, note that ``what`` was not run."""
    if time.monotonic() > ctx['deadline']:
        notes.append(f'time budget reached before {what}')
        return True
    return False


def _run_model(device, factory, backend: str, run) -> str | None:
    """Build a model with ``factory`` and its AdamW optimizer, call ``run(model, optimizer)`` under
    the attention ``backend``, then free both before the next model. Returns the error as text if
    building or running raised (one model failing must not stop the others), else None."""
    model = opt = None
    try:
        model = factory()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        with attn_backend(backend):
            run(model, opt)
        return None
    except Exception as err:  # noqa: BLE001
        return f'{type(err).__name__}: {err}'
    finally:
        model = opt = None
        free(device)


def measure_models(ctx, sizes: list[tuple[int, int]]) -> tuple[list[dict], list[str]]:
    """Forward and training step (bf16 autocast) of each model at each size; errors become rows."""
    device, dry, batch, gen = ctx['device'], ctx['dry'], ctx['plan']['batch'], ctx['gen']
    rows, notes = [], []
    for size_hw in sizes:
        factories, skipped = model_factories(ctx, size_hw)
        if skipped:
            notes.append(skipped)
        x = torch.randn(batch, 3, *size_hw, generator=gen).to(device)
        size = f'{size_hw[0]}x{size_hw[1]}'
        for name, (factory, backend) in factories.items():
            if _out_of_time(ctx, notes, f'{name} at {size}'):
                continue

            def run(model, opt, name=name, size=size, x=x):
                for mode in MODES:
                    fn = _kit_step(model, x, mode, opt)
                    if not dry:
                        fn()   # warm-up and optimizer state
                    peak = peak_memory(fn, device)
                    ms = median_ms(ctx, fn, rep_ms=1000, warmup_ms=200)
                    rows.append(dict(model=name, size=size, mode=mode, batch=batch, ms=ms,
                                     images_s=batch / (ms * 1e-3), peak_mb=_mb(peak.total),
                                     peak_above_start_mb=_mb(peak.above_start)))

            error = _run_model(device, factory, backend, run)
            if error:
                rows.append(dict(model=name, size=size, mode='-', error=error[:500]))
    return rows, sorted(set(notes))


def _models_section(rows, notes, what):
    status = 'error' if any('error' in r for r in rows) else 'ok'
    return dict(status=status, rows=rows, note=f'{what}; bf16 autocast; forward in eval mode under '
                'inference_mode, training step = forward, mean of each output, backward, AdamW step. '
                'peak_mb = peak allocated during one call (weights and optimizer state included; CUDA only), '
                'peak_above_start_mb = above what was allocated before it (mmmila.bench.memory.peak_memory). '
                + ' '.join(notes))


def section_backbone_speed(ctx) -> dict:
    """Forward and training step of MILA-T (Triton, PyTorch path) and timm's Swin-T and ConvNeXt-T at
    the plan's size, with peak memory."""
    plan = ctx['plan']
    rows, notes = measure_models(ctx, [plan['image']])
    return _models_section(rows, notes, f"batch {plan['batch']} at {plan['image'][0]}x{plan['image'][1]}")


def section_sweep(ctx) -> dict:
    """The backbones of ``backbone_speed`` at the plan's square sizes."""
    plan = ctx['plan']
    rows, notes = measure_models(ctx, [(s, s) for s in plan['sweep']])
    return _models_section(rows, notes, f"batch {plan['batch']}, square inputs")


def section_compiled_speed(ctx) -> dict:
    """Eager against ``torch.compile`` (inductor; the dry run: dynamo's eager backend) for MILA-T
    (Triton path) and timm's Swin-T: forward and training step, bf16 autocast, at the plan's size.

    Why: in eager mode on the H200 MILA-T's time hardly grows with the input (host-bound: each
    forward dispatches hundreds of small ops). Compilation removes most of that host work; this
    section says how much, and what the compilation costs (first call of each mode).
    """
    reason = compile_ready()
    if reason:
        return dict(status='skipped', note=reason)
    device, dry, plan, gen = ctx['device'], ctx['dry'], ctx['plan'], ctx['gen']
    backend = 'eager' if dry else 'inductor'
    batch, size_hw = plan['batch'], tuple(plan['image'])
    factories, skipped = model_factories(ctx, size_hw)
    wanted = ['MILA-T (Triton)', label('swin-t', 'timm')]
    x = torch.randn(batch, 3, *size_hw, generator=gen).to(device)
    rows, notes = [], [skipped] if skipped else []
    for name in [w for w in wanted if w in factories]:
        factory, attn = factories[name]
        for mode in MODES:
            if _out_of_time(ctx, notes, f'{name} {mode}'):
                continue
            row = dict(model=name, size=f'{size_hw[0]}x{size_hw[1]}', mode=mode, batch=batch,
                       backend=backend)

            def run(model, opt, mode=mode, row=row):
                torch._dynamo.reset()
                compiled = torch.compile(model, backend=backend)
                for kind, net in (('eager', model), ('compiled', compiled)):
                    step = _kit_step(net, x, mode, opt, no_grad=torch.no_grad)
                    row[f'{kind}_first_call_s'] = first_call_s(step, device)
                    row[f'{kind}_ms'] = median_ms(ctx, step, rep_ms=1000, warmup_ms=200)
                row['compiled_speedup'] = row['eager_ms'] / row['compiled_ms']

            error = _run_model(device, factory, attn, run)
            rows.append(row if error is None else
                        dict(model=name, size=row['size'], mode=mode, error=error[:1000]))
    torch._dynamo.reset()
    status = 'error' if any('error' in r for r in rows) or not rows else 'ok'
    return dict(status=status, rows=rows,
                note=f'batch {batch}, bf16 autocast; {backend} with default options; forward in eval mode '
                     'under no_grad, training step = forward, mean of each output, backward, AdamW step '
                     '(the optimizer not compiled). first_call_s of the compiled model is its compilation. '
                     + ' '.join(notes))


def _profile_steps(step, device, steps: int):
    """(wall ms per step, profiler events) of ``steps`` calls of ``step`` after two warm-up calls."""
    from torch.profiler import ProfilerActivity, profile
    step()
    step()   # warm-up: kernels compiled, optimizer state made
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync(device)
    return (time.perf_counter() - start) * 1e3 / steps, prof.key_averages()


def _self_time_us(e, device) -> float:
    if device.type != 'cuda':
        return e.self_cpu_time_total
    for name in ('self_device_time_total', 'self_cuda_time_total'):
        if hasattr(e, name):
            return getattr(e, name)
    return 0.0


def section_profile(ctx) -> dict:
    """Where an eager training step spends its time: torch.profiler, bf16 autocast, batch and size of
    the plan. MILA-T (Triton), timm's Swin-T and ConvNeXt-T side by side (``models``): wall time,
    summed kernel time and launches per step (the driver's kernel launches as the profiler counts
    them on CUDA, and mmmila.bench.launches' count of aten work calls and Triton launches on any
    device); ``rows``: MILA-T's top 25 ops.

    When the kernels' sum is well below the wall time, the step is bound by the host (Python and the
    dispatch of many small ops), not by the GPU: then the launch count is what to cut.
    """
    device, plan, gen, dry = ctx['device'], ctx['plan'], ctx['gen'], ctx['dry']
    steps = 1 if dry else 3
    x = torch.randn(plan['batch'], 3, *plan['image'], generator=gen).to(device)
    factories, skipped = model_factories(ctx, tuple(plan['image']))
    models, rows, notes = [], [], [skipped] if skipped else []
    what = 'device (CUDA kernel) self time' if device.type == 'cuda' else 'CPU self time'
    for name, (factory, backend) in factories.items():
        if name == 'MILA-T (PyTorch path)':
            continue
        if _out_of_time(ctx, notes, name):
            continue
        measured = {}

        def run(model, opt, measured=measured):
            step = _kit_step(model, x, 'train step', opt)
            measured['wall_ms'], measured['events'] = _profile_steps(step, device, steps)
            measured['counted'] = count_launches(step)

        error = _run_model(device, factory, backend, run)
        if error:
            models.append(dict(model=name, error=error[:500]))
            continue
        wall_ms, events, counted = measured['wall_ms'], measured['events'], measured['counted']
        timed = [(_self_time_us(e, device), e) for e in events]
        total_us = sum(t for t, _ in timed)
        launches = sum(e.count for e in events if e.key.startswith(('cudaLaunchKernel', 'cuLaunchKernel')))
        models.append(dict(model=name, wall_ms=wall_ms, timed_ms=total_us / 1e3 / steps,
                           driver_launches=launches / steps if device.type == 'cuda' else None,
                           counted_launches=counted.total, casts=counted.casts,
                           triton_launches=sum(counted.triton.values())))
        if name == 'MILA-T (Triton)':
            top = sorted(timed, key=lambda te: -te[0])[:25]
            rows = [dict(op=e.key[:90], ms_per_step=t / 1e3 / steps, share=t / max(total_us, 1e-9),
                         calls_per_step=e.count / steps) for t, e in top]
    mila = next((m for m in models if m['model'] == 'MILA-T (Triton)' and 'error' not in m), None)
    status = 'ok' if mila is not None and all('error' not in m for m in models) else 'error'
    return dict(status=status, rows=rows, models=models, image=list(plan['image']), batch=plan['batch'],
                wall_ms_per_step=mila and mila['wall_ms'], timed_ms_per_step=mila and mila['timed_ms'],
                kernel_launches_per_step=mila and mila['driver_launches'],
                note=f'Eager training step (forward, mean of each output, backward, AdamW), bf16 autocast, '
                     f'batch {plan["batch"]} at {plan["image"][0]}x{plan["image"][1]}; {steps} profiled '
                     f'step(s) after 2 warm-up steps, then one counted by mmmila.bench.launches. Per model: '
                     f'wall ms per step under the profiler, {what} summed over all ops (timed_ms), launches. '
                     f'Rows: MILA-T (Triton)\'s top 25 ops by {what} per step. ' + ' '.join(notes))
