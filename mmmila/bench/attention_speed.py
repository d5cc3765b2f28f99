"""MILA's attention op against the authors' chain, variants side by side: what
``tools/benchmark_attention.py`` measures.

Variants (all take qk (B, N, 2C) and v (B, N, C) and return (B, N, C) before LePE): ``authors`` (the
baseline, :mod:`mmmila.bench.authors_attention` with the classification model's complex RoPE table),
``authors-dense`` (the same chain with the dense-prediction backbone's RoPE), ``reference``
(``mmmila.ops.mila_linear_attention_ref``), ``torch`` (``mmmila.ops.mila_linear_attention_cpu``),
``compiled`` (torch.compile of the reference, on request) and ``triton`` (on CUDA).
"""
from __future__ import annotations

import torch

from mmmila.bench.authors_attention import authors_attention, authors_table, complex_rope, dense_rope
from mmmila.bench.errors import max_rel_err
from mmmila.bench.memory import peak_memory_in_fresh_process
from mmmila.bench.timing import time_interleaved
from mmmila.bench.traffic import count_traffic, fused_bytes
from mmmila.ops import mila_linear_attention_cpu, mila_linear_attention_ref, rope2d_cos_sin

# MILA-T's stages: stage -> (stride, C, heads).
STAGES = {1: (4, 64, 2), 2: (8, 128, 4), 3: (16, 256, 8), 4: (32, 512, 16)}
OP_MODES = ('fwd', 'fwd+bwd')
BASELINE = 'authors'
# The op's speed targets on a GPU, at MILA-T's stage 1 (C = 64, 2 heads) with batch 1.
TARGET_STAGE = dict(channels=64, heads=2, batch=1)
TINY_US = 100.0          # forward+backward at 8x8 tokens, microseconds at most: the per-call cost
COPY_SHARE = 0.5         # forward+backward bf16 at 512x512 tokens: bytes / time, of the copy bandwidth
AUTHORS_SPEEDUP = 10.0   # the same call against the authors' chain, at least


def stage_map(image_hw: tuple[int, int], stage: int) -> tuple[int, int]:
    """The (H, W) map of MILA-T's ``stage`` for an image of ``image_hw`` (padded up at each stride)."""
    stride = STAGES[stage][0]
    return -(-image_hw[0] // stride), -(-image_hw[1] // stride)


def make_variants(hw, channels, device, with_compile: bool = False) -> dict:
    """{name: fn(qk, v, nh)} of the variants at this map (the RoPE tables made here, once)."""
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
    if torch.device(device).type == 'cuda':
        from mmmila.kernels import mila_linear_attention_triton
        variants['triton'] = lambda qk, v, nh: mila_linear_attention_triton(qk, v, hw, nh)
    return variants


def make_inputs(hw, channels, batch, device, dtype, seed=0):
    """qk (B, N, 2C), v and the upstream gradient g (B, N, C), standard normal, drawn from ``seed``."""
    gen = torch.Generator(device='cpu').manual_seed(seed)
    n = hw[0] * hw[1]
    qk = torch.randn(batch, n, 2 * channels, generator=gen).to(device, dtype)
    v = torch.randn(batch, n, channels, generator=gen).to(device, dtype)
    g = torch.randn(batch, n, channels, generator=gen).to(device, dtype)
    return qk, v, g


def run_once(fn, qk, v, g, nh, mode):
    """One call: 'fwd' under no_grad, or 'fwd+bwd' (``out.backward(g)``); returns (out, dqk, dv)
    (the gradients None for 'fwd')."""
    if mode == 'fwd':
        with torch.no_grad():
            return fn(qk, v, nh), None, None
    qk = qk.detach().requires_grad_()
    v = v.detach().requires_grad_()
    out = fn(qk, v, nh)
    out.backward(g)
    return out, qk.grad, v.grad


def time_shape(variants, qk, v, g, nh, rounds, device):
    """The output check, then each mode timed in interleaved rounds (:func:`time_interleaved`).

    Returns:
        tuple: ({mode: {variant: [wall seconds]}}, {mode: {variant: [CPU seconds]}},
        {variant: the largest :func:`mmmila.bench.errors.rel_err` to the baseline over out, dqk, dv}).
    """
    base = run_once(variants[BASELINE], qk, v, g, nh, 'fwd+bwd')
    check = {name: max_rel_err(run_once(fn, qk, v, g, nh, 'fwd+bwd'), base)   # also the warm-up
             for name, fn in variants.items()}
    wall, cpu = {}, {}
    for mode in OP_MODES:
        steps = {name: (lambda fn=fn: run_once(fn, qk, v, g, nh, mode)) for name, fn in variants.items()}
        times = time_interleaved(steps, device, rounds)
        wall[mode] = {name: t[0] for name, t in times.items()}
        cpu[mode] = {name: t[1] for name, t in times.items()}
    return wall, cpu, check


def peak_memory_of(variant, hw, channels, nh, mode, batch, dtype: str, device, threads=None) -> int | None:
    """Peak memory (bytes above the start, :func:`mmmila.bench.memory.peak_memory`) of one call of a
    variant, in a fresh process (:func:`memory_step` prepares it there)."""
    return peak_memory_in_fresh_process('mmmila.bench.attention_speed:memory_step', threads, variant=variant,
                                        hw=list(hw), channels=channels, nh=nh, mode=mode, batch=batch,
                                        dtype=dtype, device=str(device))


def memory_step(variant, hw, channels, nh, mode, batch, dtype, device):
    """The measured call of :func:`peak_memory_of`, once its inputs, the RoPE tables and a warm-up call
    exist (a tiny one; for ``compiled`` one at the real shape, which is the compilation)."""
    hw, device = tuple(hw), torch.device(device)
    fn = make_variants(hw, channels, device, variant == 'compiled')[variant]
    qk, v, g = make_inputs(hw, channels, batch, device, getattr(torch, dtype))
    rope2d_cos_sin(hw[0], hw[1], channels, device)      # the model caches these tables too
    if variant == 'compiled':
        run_once(fn, qk, v, g, nh, mode)
    else:
        tiny = make_variants((4, 8), channels, device)[variant]
        run_once(tiny, *make_inputs((4, 8), channels, 1, device, qk.dtype), nh, mode)
    return lambda: run_once(fn, qk, v, g, nh, mode)


def traffic_rows(image_hw: tuple[int, int] = (800, 1280)) -> list[dict]:
    """Bytes moved per attention call at each MILA-T stage, B = 1: the authors' chain counted over its
    ATen ops (float32, :func:`mmmila.bench.traffic.count_traffic`), and the fused kernels' figure."""
    rows = []
    cpu = torch.device('cpu')
    for stage, (_, channels, nh) in STAGES.items():
        hw = stage_map(image_hw, stage)
        n = hw[0] * hw[1]
        qk, v, g = make_inputs(hw, channels, 1, cpu, torch.float32)
        fwd_bytes, fwd_ops, bwd_bytes, bwd_ops = count_traffic(make_variants(hw, channels, cpu)['authors'],
                                                               qk, v, g, nh)
        rows.append(dict(stage=stage, n=n, channels=channels, authors_fwd=fwd_bytes, authors_fwd_ops=fwd_ops,
                         authors_bwd=bwd_bytes, authors_bwd_ops=bwd_ops,
                         fused_fp32=fused_bytes(n, channels, 4), fused_bf16=fused_bytes(n, channels, 2)))
    return rows


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


def copy_share(hw: tuple[int, int], mode: str, ms: float, copy_gb_s: float) -> float:
    """The share of ``copy_gb_s`` that one call at :data:`TARGET_STAGE` with bf16 inputs reaches in
    ``ms``: the op's bytes (:func:`mmmila.bench.traffic.fused_bytes`; 4C per token forward, + 7C
    backward for 'fwd+bwd') / time / copy bandwidth."""
    fwd_bytes, bwd_bytes = fused_bytes(TARGET_STAGE['batch'] * hw[0] * hw[1], TARGET_STAGE['channels'], 2)
    nbytes = fwd_bytes + (bwd_bytes if mode == 'fwd+bwd' else 0)
    return nbytes / (ms * 1e-3) / 1e9 / copy_gb_s


def target_rows(time_ms, copy_gb_s: float, tiny_map: tuple[int, int], big_map: tuple[int, int],
                judged: bool, measured_on: str) -> list[dict]:
    """The op's speed targets as rows: item, value, unit, target, met (None when not ``judged``).

    ``time_ms(hw, variant, mode)`` is the median ms of one call of ``variant`` ('triton' or
    'authors') in ``mode`` ('fwd' or 'fwd+bwd', :data:`OP_MODES`) at map ``hw`` with bf16 inputs, at
    :data:`TARGET_STAGE`. Bytes are the least the op must move
    (:func:`mmmila.bench.traffic.fused_bytes`); the share is (bytes / time) / ``copy_gb_s``.
    Rows without a target (forward alone) say where the time goes.
    """
    def row(item, value, unit, target=None, met=None):
        return dict(item=item, value=value, unit=unit, target=target,
                    met=met if judged and target is not None else None, measured_on=measured_on)

    tiny = '%dx%d tokens' % tiny_map
    big = '%dx%d tokens' % big_map
    both_us = time_ms(tiny_map, 'triton', 'fwd+bwd') * 1e3
    rows = [row(f'op fwd+bwd bf16 {tiny}: time', both_us, 'us', f'<= {TINY_US:g} us', both_us <= TINY_US),
            row(f'op fwd bf16 {tiny}: time', time_ms(tiny_map, 'triton', 'fwd') * 1e3, 'us')]
    both = time_ms(big_map, 'triton', 'fwd+bwd')
    authors = time_ms(big_map, 'authors', 'fwd+bwd')
    fwd = time_ms(big_map, 'triton', 'fwd')
    both_share = copy_share(big_map, 'fwd+bwd', both, copy_gb_s)
    rows += [row(f'op fwd+bwd bf16 {big}: share of copy bandwidth', both_share, 'of copy',
                 f'>= {COPY_SHARE:g}', both_share >= COPY_SHARE),
             row(f"op fwd+bwd bf16 {big}: Triton vs authors' chain", authors / both, 'x',
                 f'>= {AUTHORS_SPEEDUP:g}x', authors / both >= AUTHORS_SPEEDUP),
             row(f'op fwd+bwd bf16 {big}: time', both * 1e3, 'us'),
             row(f"op fwd+bwd bf16 {big}: authors' chain time", authors * 1e3, 'us'),
             row(f'op fwd bf16 {big}: share of copy bandwidth', copy_share(big_map, 'fwd', fwd, copy_gb_s),
                 'of copy'),
             row(f'op fwd bf16 {big}: time', fwd * 1e3, 'us')]
    return rows
