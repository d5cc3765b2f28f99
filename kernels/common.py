"""Device helpers shared by the forward and backward kernels (feature map, RoPE table, tiles, the
in-kernel sum of the chunks' partial sums and its counters).

Notation inside kernels: ``D`` head dim, ``HALF = D // 2`` channel pairs per head, ``BLOCK_N``
tokens per tile. A tile that is rotated is loaded (and stored) as two (BLOCK_N, HALF) halves: the
even ("re") and odd ("im") channel of each RoPE pair, so the rotation never shuffles lanes and no
layout conversion splits or joins a tile in registers.
"""
from __future__ import annotations

import contextlib
from functools import lru_cache

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton
from triton.runtime.jit import JITFunction

from mmmila.ops.capture import capturing_graph
from mmmila.ops.rope2d import rope2d_theta

from . import heuristics

EPS = tl.constexpr(1e-6)  # a constexpr: compiled kernels may only read constexpr globals
CHUNK_GROUP = tl.constexpr(heuristics.CHUNK_GROUP)


@triton.jit
def _phi(t):
    """elu(t) + 1 in float32: t + 1 for t > 0, exp(t) otherwise (exp of min(t, 0) never overflows)."""
    return tl.where(t > 0, t + 1.0, tl.exp(tl.minimum(t, 0.0)))


@triton.jit
def _dphi(t, phi):
    """d phi / dt given t and phi(t): 1 for t > 0, exp(t) = phi(t) otherwise."""
    return tl.where(t > 0, 1.0, phi)


@triton.jit
def _rope_cos_sin(offs, mask, rope_ptr, head, width, channels, HALF: tl.constexpr):
    """cos and sin, (BLOCK_N, HALF) float32, of the RoPE angles of one head's pairs (0 on masked rows).

    Pair i of the whole C channels (i = head * HALF + j) turns by row * theta_i for i < C/4 and
    by col * theta_(i - C/4) otherwise: both are p * theta_f of one position p (row or column) and
    one frequency f, read from the table of :func:`rope_table` (cos and sin of p * theta_f).
    """
    pair = head * HALF + tl.arange(0, HALF)
    quarter = channels // 4
    is_col = pair >= quarter
    freq = tl.where(is_col, pair - quarter, pair)
    pos = tl.where(is_col[None, :], (offs % width)[:, None], (offs // width)[:, None])
    entry = rope_ptr + (pos * quarter + freq[None, :]) * 2
    return (tl.load(entry, mask=mask[:, None], other=0.0),
            tl.load(entry + 1, mask=mask[:, None], other=0.0))


@triton.jit
def _program_head(num_heads):
    """(bh, batch, head) of this program: axis 1 of every grid is batch * num_heads + head."""
    bh = tl.program_id(1)
    return bh, bh // num_heads, bh % num_heads


@triton.jit
def _head_ptr(ptr, batch, stride_b, channel0, stride_c):
    """Address of token 0, channel ``channel0`` of image ``batch`` (64-bit batch offset)."""
    return ptr + batch.to(tl.int64) * stride_b + channel0 * stride_c


@triton.jit
def _token_tile(N, BLOCK_N: tl.constexpr):
    """Token offsets of this program's tile (axis 0 of the grid) and their in-range mask."""
    offs = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    return offs, offs < N


@triton.jit
def _load_tile(ptr, offs, mask, chan, stride_n, stride_c):
    """Load a (BLOCK_N, D) tile (rows ``offs``, channels ``chan``) as float32; masked rows are 0."""
    ptrs = ptr + offs.to(tl.int64)[:, None] * stride_n + chan[None, :] * stride_c
    return tl.load(ptrs, mask=mask[:, None], other=0.0).to(tl.float32)


@triton.jit
def _store_tile(ptr, offs, mask, chan, stride_n, stride_c, value):
    """Store a float32 (BLOCK_N, D) tile in the dtype of ``ptr``."""
    ptrs = ptr + offs.to(tl.int64)[:, None] * stride_n + chan[None, :] * stride_c
    tl.store(ptrs, value.to(ptr.dtype.element_ty), mask=mask[:, None])


@triton.jit
def _load_halves(ptr, offs, mask, stride_n, stride_c, HALF: tl.constexpr):
    """The even and the odd channel of each RoPE pair of a (BLOCK_N, 2 * HALF) tile, each
    (BLOCK_N, HALF) float32 (masked rows 0): loaded apart, so no register shuffle splits them."""
    even = 2 * tl.arange(0, HALF)
    return (_load_tile(ptr, offs, mask, even, stride_n, stride_c),
            _load_tile(ptr, offs, mask, even + 1, stride_n, stride_c))


@triton.jit
def _store_halves(ptr, offs, mask, stride_n, stride_c, re, im, HALF: tl.constexpr):
    """Inverse of :func:`_load_halves`: store even and odd channels, in the dtype of ``ptr``."""
    even = 2 * tl.arange(0, HALF)
    _store_tile(ptr, offs, mask, even, stride_n, stride_c, re)
    _store_tile(ptr, offs, mask, even + 1, stride_n, stride_c, im)


@triton.jit
def _load_vec_halves(ptr, HALF: tl.constexpr):
    """Even and odd entries of a float32 vector of 2 * HALF, each (HALF,)."""
    even = 2 * tl.arange(0, HALF)
    return tl.load(ptr + even), tl.load(ptr + even + 1)


@triton.jit
def _load_pairs(ptr, HALF: tl.constexpr, D: tl.constexpr):
    """Load a float32 (D, D) matrix (row-major) as its even and odd rows, each (HALF, D)."""
    rows = 2 * tl.arange(0, HALF)
    cols = tl.arange(0, D)
    even = tl.load(ptr + rows[:, None] * D + cols[None, :])
    odd = tl.load(ptr + (rows + 1)[:, None] * D + cols[None, :])
    return even, odd


@triton.jit
def _store_pairs(ptr, even, odd, HALF: tl.constexpr, D: tl.constexpr):
    """Store even and odd rows, each (HALF, D) float32, as a row-major (D, D) matrix."""
    rows = 2 * tl.arange(0, HALF)
    cols = tl.arange(0, D)
    tl.store(ptr + rows[:, None] * D + cols[None, :], even)
    tl.store(ptr + (rows + 1)[:, None] * D + cols[None, :], odd)


@triton.jit
def _last_to_finish(counter_ptr, count):
    """Whether this program is the last of ``count`` programs that count in ``counter_ptr`` (after
    storing what they made); the last one resets the counter to 0 for the next launch.

    Every thread's stores are done before the count (the barrier), and the count is an acq_rel
    atomic at GPU scope: the last program sees what the others stored (it reads with ``.cg``).
    """
    tl.debug_barrier()
    done = tl.atomic_add(counter_ptr, 1, sem='acq_rel', scope='gpu')
    last = done == count - 1
    if last:
        tl.atomic_xchg(counter_ptr, 0, sem='relaxed', scope='gpu')
    return last


@triton.jit
def _sum_records(rec_ptr, num_chunks, stride_rec, extra_ptr, scale, out_ptr,
                 SIZE: tl.constexpr, CHUNK_BLOCK: tl.constexpr, HAS_EXTRA: tl.constexpr):
    """out[:SIZE] = scale * (sum over c < num_chunks of rec[c * stride_rec + :SIZE] (+ extra[:SIZE])).

    The chunks' float32 partials are summed in a fixed order (CHUNK_BLOCK records at a time, then
    over the blocks): the result does not depend on which program ran last.
    """
    cols = tl.arange(0, SIZE)
    rows = tl.arange(0, CHUNK_BLOCK)
    acc = tl.zeros((SIZE,), dtype=tl.float32)
    for c0 in range(0, num_chunks, CHUNK_BLOCK):
        r = c0 + rows
        x = tl.load(rec_ptr + r.to(tl.int64)[:, None] * stride_rec + cols[None, :],
                    mask=(r < num_chunks)[:, None], other=0.0, cache_modifier='.cg')
        acc += tl.sum(x, axis=0)
    if HAS_EXTRA:
        acc += tl.load(extra_ptr + cols).to(tl.float32)
    tl.store(out_ptr + cols, acc * scale)


@triton.jit
def _finish_head_sums(part_ptr, counter_ptr, bh, chunk, num_chunks, N, acc_even, acc_odd, vec_even, vec_odd,
                      extra_mat_ptr, extra_vec_ptr, mat_ptr, vec_ptr,
                      D: tl.constexpr, HAS_EXTRA: tl.constexpr):
    """Add the chunks' partial sums of one (batch, head) in two levels, without a launch of its own.

    This chunk's partial (a D x D matrix as even and odd rows, and a D vector) is stored as record
    ``chunk`` of the head's ``num_chunks + num_groups`` records of ``part_ptr`` (D*D + D float32
    each). The last program of each group of CHUNK_GROUP chunks to finish adds the group's records
    into record ``num_chunks + group``; the last group to finish adds the group sums (+ the extras,
    read contiguous) times 1/N into ``mat_ptr`` (D*D) and ``vec_ptr`` (D). Counters: ``num_groups``
    for the groups, then one for the head, per (batch, head). No program adds more than
    max(CHUNK_GROUP, num_groups) records, and the order of every sum is fixed.
    """
    HALF: tl.constexpr = D // 2
    REC: tl.constexpr = D * D + D
    num_groups = (num_chunks + CHUNK_GROUP - 1) // CHUNK_GROUP
    head_parts = part_ptr + bh.to(tl.int64) * (num_chunks + num_groups) * REC
    record = head_parts + chunk * REC
    _store_pairs(record, acc_even, acc_odd, HALF, D)
    tl.store(record + D * D + 2 * tl.arange(0, HALF), vec_even)
    tl.store(record + D * D + 2 * tl.arange(0, HALF) + 1, vec_odd)
    counters = counter_ptr + bh * (num_groups + 1)
    group = chunk // CHUNK_GROUP
    first = group * CHUNK_GROUP
    if _last_to_finish(counters + group, tl.minimum(num_chunks - first, CHUNK_GROUP)):
        members = head_parts + first * REC
        group_sum = head_parts + (num_chunks + group) * REC
        size = tl.minimum(num_chunks - first, CHUNK_GROUP)
        _sum_records(members, size, REC, mat_ptr, 1.0, group_sum, D * D, CHUNK_GROUP, False)
        _sum_records(members + D * D, size, REC, vec_ptr, 1.0, group_sum + D * D, D, CHUNK_GROUP, False)
        if _last_to_finish(counters + num_groups, num_groups):
            group_sums = head_parts + num_chunks * REC
            scale = 1.0 / N
            _sum_records(group_sums, num_groups, REC, extra_mat_ptr + bh.to(tl.int64) * D * D, scale,
                         mat_ptr + bh.to(tl.int64) * D * D, D * D, CHUNK_GROUP, HAS_EXTRA)
            _sum_records(group_sums + D * D, num_groups, REC, extra_vec_ptr + bh.to(tl.int64) * D, scale,
                         vec_ptr + bh.to(tl.int64) * D, D, CHUNK_GROUP, HAS_EXTRA)


def launcher(kernel):
    """``kernel`` made launchable inside a ``triton_op``: through :func:`torch.library.wrap_triton`
    (so that a tracer records the launch) when it is compiled, as it is when the Triton interpreter
    made it (``TRITON_INTERPRET=1``).

    Nothing can trace an interpreted kernel; torch from 2.13 on returns one as it is, and earlier
    versions refuse it with a RuntimeError. Launch as ``launcher(kernel)[grid](...)``.
    """
    return wrap_triton(kernel) if isinstance(kernel, JITFunction) else kernel


def device_ctx(t: torch.Tensor):
    """Make ``t``'s GPU the current one while kernels launch (Triton launches on the current device)."""
    if t.is_cuda and t.device.index != torch.cuda.current_device():
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()


_counters: dict = {}


def launch_buffers(positions: int, channels: int, counters: int, device: torch.device
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The RoPE table (:func:`rope_table`) and ``counters`` chunk counters (:func:`chunk_counters`)
    of a launch, with one look at whether a graph is being captured."""
    capturing = capturing_graph()
    return (rope_table(positions, channels, device, capturing=capturing),
            chunk_counters(counters, device, capturing=capturing))


def chunk_counters(count: int, device: torch.device, capturing: bool | None = None) -> torch.Tensor:
    """At least ``count`` int32 counters, all 0 between launches.

    The reduction kernels count their finished chunks and groups in them (:func:`_finish_head_sums`,
    ``LaunchConfig.counters`` of them) and the last program of each count resets it, so one buffer
    serves every launch in a stream's order: it is made once per (device, stream) in eager mode.
    While a graph is captured (``capturing``, default :func:`capturing_graph`) a fresh zeroed buffer
    is made instead (a cached tensor must not enter a traced graph).
    """
    if capturing_graph() if capturing is None else capturing:
        return torch.zeros(count, dtype=torch.int32, device=device)
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == 'cuda' else 0
    buf = _counters.get((device, stream))
    if buf is None or buf.numel() < count:
        buf = torch.zeros(max(count, 256), dtype=torch.int32, device=device)
        _counters[(device, stream)] = buf
    return buf


def rope_table(positions: int, channels: int, device: torch.device, base: float = 10000.0,
               capturing: bool | None = None) -> torch.Tensor:
    """cos and sin of p * theta_f, (positions, C/4, 2) float32 ([..., 0] cos, [..., 1] sin), for the
    positions p < max(H, W) of a map and the frequencies of
    :func:`mmmila.ops.rope2d.rope2d_theta`: the angles of the reference's tables bit for bit (float32
    products of integer positions), turned by the same torch cos and sin.

    Cached per (positions, C, device) in eager mode (a handful exist in a model); built from ops
    while a graph is captured (``capturing``, default :func:`capturing_graph`: a cached tensor must
    not enter a traced graph, and a symbolic size cannot be a key).
    """
    if capturing_graph() if capturing is None else capturing:
        return _rope_table(positions, channels, device, base)
    return _cached_table(int(positions), channels, device, base)


def _rope_table(positions, channels: int, device: torch.device, base: float) -> torch.Tensor:
    theta = rope2d_theta(channels, device, base)
    angles = torch.arange(positions, dtype=torch.float32, device=device)[:, None] * theta[None]
    return torch.stack([angles.cos(), angles.sin()], dim=-1)


_cached_table = lru_cache(maxsize=64)(_rope_table)
