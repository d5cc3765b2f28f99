"""The GPU kit's correctness sections: the Triton op against float64 (``op_correctness``), the whole
backbone's Triton and PyTorch paths against float64 (``backbone_correctness``), and torch.compile
against eager (``compile``)."""
from __future__ import annotations

import copy
import math
import time
from collections import Counter
from contextlib import contextmanager, nullcontext

import torch

from mmmila.bench.attention_calls import AttentionOpsSeen
from mmmila.bench.errors import grad_errors, rel_err, rel_rms, whole_grad_error
from mmmila.bench.float64_attention import attention_f64
from mmmila.bench.gpu_kit.common import attn_backend, build_mila, compile_ready
from mmmila.bench.gpu_kit.plan import BACKBONE_FLOOR, COMPILE_TOL, OP_TOL
from mmmila.bench.steps import outputs_and_grads
from mmmila.bench.timing import sync


def poison(device, specs) -> None:
    """Fill fresh blocks of the given (shape, dtype) with NaN and free them again.

    The CUDA caching allocator hands the same blocks to the next requests of those sizes, so an
    output element a kernel fails to write reads as NaN instead of an old, plausible value.
    """
    blocks = [torch.full(shape, float('nan'), dtype=dtype, device=device) for shape, dtype in specs]
    sync(device)
    del blocks


def triton_op(fault: str | None):
    """The op under test: mmmila's public function with the Triton backend (plus a test fault)."""
    from mmmila.ops import mila_linear_attention

    def op(qk, v, hw, num_heads):
        out = mila_linear_attention(qk, v, hw, num_heads, backend='triton')
        if fault == 'scale':      # a 1e-3 relative error: float32 must fail, 16-bit must pass
            out = out * (1 + 1e-3)
        elif fault == 'nan':      # the last token left unwritten
            out = torch.cat([out[:, :-1], torch.full_like(out[:, -1:], float('nan'))], dim=1)
        return out
    return op


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
    """The Triton op against the float64 statement of the maths (``attention_f64``), float32 / bfloat16
    / float16, every distinct MILA-T/S/B stage and an odd small map; the allocator's blocks of the
    output sizes filled with NaN before each call (an unwritten element shows as NaN). Output, dqk and
    dv within ``OP_TOL`` (:func:`mmmila.bench.errors.rel_err`), never NaN."""
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
            truth = outputs_and_grads(attention_f64, qk.double(), v.double(), g.double(), hw, nh)
            # out, dqk, dv, twice over: blocks for whatever the op allocates in those sizes
            got = outputs_and_grads(op, qk, v, g, hw, nh, before=lambda: poison(
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


def _autocast(device, precision: str):
    return nullcontext() if precision == 'float32' else torch.autocast(device.type, dtype=torch.bfloat16)


@contextmanager
def no_tf32():
    """Full float32 matmuls and convolutions (cuDNN convolutions default to TF32 on Ampere and later)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def section_backbone_correctness(ctx) -> dict:
    """MILA-T, Triton path and PyTorch path against the same model in float64, forward and backward.

    The truth is the PyTorch path run in float64 (a copy of the same weights, same input). Each path
    is measured against it in float32 (TF32 off) and under bf16 autocast, and the Triton path's error
    may be at most twice the PyTorch path's plus a floor (BACKBONE_FLOOR: 1e-4 in float32, 1e-3 in
    bf16; FlashAttention's rule for low-precision kernels): per output, for all gradients as one
    vector, and for each parameter against the PyTorch path's worst parameter. Comparing the two
    float32 paths with each other instead blames the kernel for the round-off of everything around it:
    a bias gradient that is a sum over 2x800x1280 pixels with cancellation differed by 1.4e-3 between
    the paths on the H200.
    """
    device, gen, plan = ctx['device'], ctx['gen'], ctx['plan']
    model = build_mila(ctx).train()
    x = torch.randn(plan['batch'], 3, *plan['image'], generator=gen).to(device)
    with torch.no_grad():
        weights = [torch.randn(o.shape, generator=gen).to(device) for o in model(x)]

    def run(net, inp, backend, precision):
        net.zero_grad(set_to_none=True)
        with attn_backend(backend), _autocast(device, precision), AttentionOpsSeen() as calls:
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
                             all_grads=all_err, all_grads_limit=2 * torch_all + floor,
                             torch_path_all_grads=torch_all,
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


def section_compile(ctx) -> dict:
    """``torch.compile`` of MILA-T, forward and backward, against eager; graph breaks counted.

    Graph breaks are read from dynamo's counters during the compiled call (one trace, no separate
    ``explain`` pass). CUDA: inductor. Dry run: dynamo with the eager backend (no C++ builds on CPU).
    A failure is recorded, never raised.
    """
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
