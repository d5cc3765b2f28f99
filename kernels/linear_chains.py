"""The block's matrix-product chains as Triton kernels: a LayerNorm or a GELU fused into the linear
layers that read it, forward and backward, each pass one or two launches.

``torch.ops.mmmila.norm_linears_triton`` and ``torch.ops.mmmila.gelu_linear_triton`` are the CUDA
implementations (CPU tensors under the Triton interpreter) of ``mmmila::norm_linears`` and
``mmmila::gelu_linear`` (:mod:`mmmila.ops.linear_chains`), with the same schemas. Rows are the
tokens (M = B * N), K the input features, N_l the output features of linear layer l (at most two
layers read one LayerNorm):

- forward, one launch (``_chain_fwd_kernel``): each program computes a (BLOCK_M, BLOCK_N) tile of
  one layer's output. The prologue normalises the rows it reads (the row's mean and variance in a
  first pass over K, float32) or applies the exact GELU; the epilogue adds the float32 bias.
- backward of ``norm_linears``, two launches:

  1. ``_norm_dx_kernel``: each program owns whole rows. It computes the gradient at the norm's
     output, ``sum_l g_l @ W_l`` (BLOCK_M, K), and the LayerNorm's backward from it; it stores
     dL/dx, the rows' mean and 1/std for the next launch, and its rows' share of the LayerNorm
     scale's and shift's gradients; the last program to finish adds the shares (in program order).
  2. ``_chain_dw_kernel``: the weight gradients ``g_l^T @ norm(x)`` with the bias gradients
     ``sum g_l`` beside them. The rows are split over several programs per output tile (a weight is
     small, the rows are many); each stores its partial tile and the last to finish adds them in
     split order.

- backward of ``gelu_linear``, two launches: ``_gelu_dx_kernel`` (``(g @ W) * gelu'(h)``) and
  ``_chain_dw_kernel`` with the GELU prologue.

Matrix products run in the activations' dtype (a float32 weight is cast per tile, so autocast need
not cast it) and accumulate in float32; LayerNorm statistics, GELU and biases are float32. Weight
and bias gradients are stored in the parameters' dtypes, activation gradients in the activations'.
The sums of partial gradients have a fixed order: results do not depend on which program ran last.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from mmmila.ops.linear_chains import (gelu_linear_backward_fake, norm_linears_backward_fake,
                                      register_gelu_linear_op, register_norm_linears_op)

from .common import _last_to_finish, chunk_counters, device_ctx, launcher
from .heuristics import parallel_slots

LN, GELU = tl.constexpr(1), tl.constexpr(2)     # the prologues
MAX_NORM_FEATURES = 2048   # the norm's dL/dx kernel holds whole rows (BLOCK_M x K) in registers
MAX_CHAIN_LAYERS = 2


@dataclass(frozen=True)
class ChainLaunchConfig:
    """Block sizes and grids of one chain op's launches.

    Attributes:
        block_m (int): rows per forward tile.
        block_n (int): output features per forward tile and per weight-gradient tile.
        block_k (int): input features per step of the forward's loop and per weight-gradient tile.
        dw_block_m (int): rows per step of the weight-gradient loop.
        splits (int): programs that share the rows of one weight-gradient tile.
        split_rows (int): rows per split, a multiple of ``dw_block_m``.
        dx_programs (int): programs of the norm's dL/dx kernel (each loops over row blocks).
        dx_block_m (int): rows per block of the dL/dx kernels.
        dx_block_k (int): features of the norm's dL/dx kernel: all of K, rounded up.
        dx_warps (int): warps per program of the norm's dL/dx kernel, which holds whole rows.
        num_warps (int): warps per program (ignored by the interpreter).
        dot_precision (str): ``input_precision`` of ``tl.dot`` on float32 tiles.
        upcast_dots (bool): multiply 16-bit tiles as float32 (the interpreter, which has no 16-bit
            ``tl.dot``: the tiles are rounded to 16 bits first, so the products are the same).
    """

    block_m: int
    block_n: int
    block_k: int
    dw_block_m: int
    splits: int
    split_rows: int
    dx_programs: int
    dx_block_m: int
    dx_block_k: int
    dx_warps: int
    num_warps: int
    dot_precision: str
    upcast_dots: bool


def _block(size: int, cap: int) -> int:
    """A power-of-two tile side: ``size`` rounded up, at least 16 (``tl.dot``), at most ``cap``."""
    return max(16, min(cap, triton.next_power_of_2(max(int(size), 1))))


def _slots(device: torch.device) -> int:
    """Programs that share a weight-gradient tile's rows or the norm's dL/dx: four per SM on a GPU,
    eight under the interpreter (enough for several splits of a small test's rows)."""
    return parallel_slots(device, per_sm=4, interpreted=8)


def chain_launch_config(rows: int, in_features: int, out_features: list[int], dtype: torch.dtype,
                        device: torch.device) -> ChainLaunchConfig:
    """Launch parameters for ``rows`` tokens, K = ``in_features`` and the layers' output features.

    Reasoned defaults for tall, thin products (K and N_l at most a few thousand, M up to 10^5 and
    more), not an autotuning result. float32 products follow ``torch.backends.cuda.matmul.allow_tf32``
    as ``nn.Linear`` does; 16-bit products ignore it. Cached per problem when the sizes are plain
    ints (not while a graph is traced with symbolic sizes).
    """
    tf32 = device.type == 'cuda' and dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32
    key = (rows, in_features, tuple(out_features), device, tf32)
    if all(type(v) is int for v in (rows, in_features, *out_features)):
        return _cached_config(*key)
    return _choose_config(*key)


def _choose_config(rows, in_features, out_features, device, tf32: bool) -> ChainLaunchConfig:
    block_n = _block(max(out_features), 64)
    block_k = _block(in_features, 64)
    dw_block_m = 16   # 32 makes the float32 weight-gradient kernel spill on sm_90 (ptxas)
    tiles = sum(triton.cdiv(n, block_n) for n in out_features) * triton.cdiv(in_features, block_k)
    row_blocks = max(1, triton.cdiv(rows, dw_block_m))
    splits = max(1, min(row_blocks, _slots(device) // tiles))
    split_rows = triton.cdiv(row_blocks, splits) * dw_block_m
    splits = max(1, triton.cdiv(rows, split_rows))    # no empty trailing split
    dx_block_m = 16
    dx_programs = max(1, min(triton.cdiv(rows, dx_block_m), _slots(device)))
    # the norm's dL/dx kernel keeps (16, K) float32 tiles: more warps for wider rows, 16 values of
    # each per thread (ptxas still reports spills from K = 512 on: docs/kernels.md)
    dx_block_k = _block(in_features, MAX_NORM_FEATURES)
    dx_warps = max(4, min(32, dx_block_m * dx_block_k // (32 * 16)))
    return ChainLaunchConfig(64, block_n, block_k, dw_block_m, splits, split_rows, dx_programs,
                             dx_block_m, dx_block_k, dx_warps, 4 if in_features <= 256 else 8,
                             'tf32' if tf32 else 'ieee', device.type != 'cuda')


_cached_config = lru_cache(maxsize=256)(_choose_config)


# ----------------------------------------------------------------------------------------------
# Device helpers


@triton.jit
def _gelu_and_grad(t):
    """Exact GELU t * Phi(t) and its derivative Phi(t) + t * phi(t), float32."""
    cdf = 0.5 * (1.0 + tl.math.erf(t * 0.7071067811865476))
    pdf = tl.exp(-0.5 * t * t) * 0.3989422804014327
    return t * cdf, cdf + t * pdf


@triton.jit
def _operand(t, dtype, UPCAST: tl.constexpr):
    """``t`` rounded to the product's dtype (to nearest, ties to even); in float32 if ``UPCAST``.

    ``UPCAST`` is the interpreter's case: its ``tl.dot`` cannot multiply 16-bit tiles, so it
    multiplies the rounded values in float32 (the same products), and as it truncates float32 to
    bfloat16 in ``.to``, the rounding to bfloat16 is done on the bits here.
    """
    if UPCAST:
        t = t.to(tl.float32)
        if dtype == tl.bfloat16:
            bits = t.to(tl.uint32, bitcast=True)
            bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
            t = bits.to(tl.uint32).to(tl.float32, bitcast=True)
        else:
            t = t.to(dtype).to(tl.float32)
    else:
        t = t.to(dtype)
    return t


@triton.jit
def _row_stats(x_ptr, rows, rmask, K, eps, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """Mean and 1/std of rows ``rows`` of the (M, K) float tensor, two passes over K, float32."""
    total = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        m = rmask[:, None] & (ks < K)[None, :]
        total += tl.sum(tl.load(x_ptr + rows.to(tl.int64)[:, None] * K + ks[None, :], mask=m,
                                other=0.0).to(tl.float32), axis=1)
    mean = total / K
    var = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        m = rmask[:, None] & (ks < K)[None, :]
        x = tl.load(x_ptr + rows.to(tl.int64)[:, None] * K + ks[None, :], mask=m, other=0.0)
        d = tl.where(m, x.to(tl.float32) - mean[:, None], 0.0)
        var += tl.sum(d * d, axis=1)
    return mean, 1.0 / tl.sqrt(var / K + eps)


@triton.jit
def _prologue(x_ptr, rows, rmask, ks, K, mean, rstd, gamma_ptr, beta_ptr, PROLOGUE: tl.constexpr):
    """The (rows, ks) tile of what the linear layers read, float32, 0 outside the (M, K) range:
    the LayerNorm's output (rows' ``mean``, ``rstd``) or GELU of the input."""
    kmask = ks < K
    m = rmask[:, None] & kmask[None, :]
    a = tl.load(x_ptr + rows.to(tl.int64)[:, None] * K + ks[None, :], mask=m, other=0.0).to(tl.float32)
    if PROLOGUE == LN:
        gamma = tl.load(gamma_ptr + ks, mask=kmask, other=0.0).to(tl.float32)
        beta = tl.load(beta_ptr + ks, mask=kmask, other=0.0).to(tl.float32)
        a = (a - mean[:, None]) * rstd[:, None] * gamma[None, :] + beta[None, :]
    else:
        a, _ = _gelu_and_grad(a)
    return tl.where(m, a, 0.0)


@triton.jit
def _layer_of_tile(pid, N0, N1, BLOCK: tl.constexpr):
    """(layer, first output feature) of output-feature tile ``pid``: layer 0's tiles come first."""
    tiles0 = tl.cdiv(N0, BLOCK)
    if pid < tiles0:
        layer = 0
        n0 = pid * BLOCK
    else:
        layer = 1
        n0 = (pid - tiles0) * BLOCK
    return layer, n0


# ----------------------------------------------------------------------------------------------
# Kernels


@triton.jit
def _chain_fwd_kernel(
        x_ptr, gamma_ptr, beta_ptr, w0_ptr, b0_ptr, out0_ptr, w1_ptr, b1_ptr, out1_ptr,
        M, K, N0, N1, eps,
        PROLOGUE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """out_l[rows, n-tile] = prologue(x)[rows] @ W_l[n-tile]^T + b_l; axis 1 runs over the tiles of
    layer 0, then those of layer 1."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < M
    layer, n0 = _layer_of_tile(tl.program_id(1), N0, N1, BLOCK_N)
    if layer == 0:
        w_ptr, b_ptr, out_ptr, N = w0_ptr, b0_ptr, out0_ptr, N0
    else:
        w_ptr, b_ptr, out_ptr, N = w1_ptr, b1_ptr, out1_ptr, N1
    ns = n0 + tl.arange(0, BLOCK_N)
    nmask = ns < N
    mean = tl.zeros((BLOCK_M,), dtype=tl.float32)
    rstd = tl.zeros((BLOCK_M,), dtype=tl.float32)
    if PROLOGUE == LN:
        mean, rstd = _row_stats(x_ptr, rows, rmask, K, eps, BLOCK_M, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        a = _prologue(x_ptr, rows, rmask, ks, K, mean, rstd, gamma_ptr, beta_ptr, PROLOGUE)
        w = tl.load(w_ptr + ns.to(tl.int64)[None, :] * K + ks[:, None],
                    mask=nmask[None, :] & (ks < K)[:, None], other=0.0)
        dt = x_ptr.dtype.element_ty
        acc = tl.dot(_operand(a, dt, UPCAST), _operand(w, dt, UPCAST), acc, input_precision=DOT_PRECISION)
    acc += tl.load(b_ptr + ns, mask=nmask, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + rows.to(tl.int64)[:, None] * N + ns[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=rmask[:, None] & nmask[None, :])


@triton.jit
def _grad_at_input(g_ptr, w_ptr, rows, rmask, ks, kmask, N, K, acc, BLOCK_N: tl.constexpr,
                   DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """acc + g[rows] @ W[:, ks] for one layer, g (M, N) and W (N, K): the product in g's dtype,
    summed in float32."""
    for n0 in range(0, N, BLOCK_N):
        ns = n0 + tl.arange(0, BLOCK_N)
        nmask = ns < N
        g = tl.load(g_ptr + rows.to(tl.int64)[:, None] * N + ns[None, :],
                    mask=rmask[:, None] & nmask[None, :], other=0.0)
        w = tl.load(w_ptr + ns.to(tl.int64)[:, None] * K + ks[None, :],
                    mask=nmask[:, None] & kmask[None, :], other=0.0)
        dt = g_ptr.dtype.element_ty
        acc = tl.dot(_operand(g, dt, UPCAST), _operand(w, dt, UPCAST), acc, input_precision=DOT_PRECISION)
    return acc


@triton.jit
def _norm_dx_kernel(
        g0_ptr, w0_ptr, g1_ptr, w1_ptr, x_ptr, gamma_ptr, dx_ptr, mean_ptr, rstd_ptr,
        part_ptr, counter_ptr, dgamma_ptr, dbeta_ptr,
        M, K, N0, N1, eps,
        TWO: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
        BLOCK_P: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """dL/dx of the LayerNorm from dL/dn = sum_l g_l @ W_l, for row blocks pid, pid + P, ... (P
    programs; BLOCK_K >= K, whole rows). Stores the rows' mean and 1/std, and this program's share of
    dL/dgamma and dL/dbeta as record ``pid`` of ``part`` (2 K float32); the last program to finish
    adds the P records in order."""
    pid = tl.program_id(0)
    P = tl.num_programs(0)
    ks = tl.arange(0, BLOCK_K)
    kmask = ks < K
    gamma = tl.load(gamma_ptr + ks, mask=kmask, other=0.0).to(tl.float32)
    share_gamma = tl.zeros((BLOCK_K,), dtype=tl.float32)
    share_beta = tl.zeros((BLOCK_K,), dtype=tl.float32)
    for rb in range(pid, tl.cdiv(M, BLOCK_M), P):
        rows = rb * BLOCK_M + tl.arange(0, BLOCK_M)
        rmask = rows < M
        gn = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
        gn = _grad_at_input(g0_ptr, w0_ptr, rows, rmask, ks, kmask, N0, K, gn, BLOCK_N, DOT_PRECISION,
                            UPCAST)
        if TWO:
            gn = _grad_at_input(g1_ptr, w1_ptr, rows, rmask, ks, kmask, N1, K, gn, BLOCK_N,
                                DOT_PRECISION, UPCAST)
        m = rmask[:, None] & kmask[None, :]
        offs = rows.to(tl.int64)[:, None] * K + ks[None, :]
        x = tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float32)
        mean = tl.sum(x, axis=1) / K
        d = tl.where(m, x - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=1) / K + eps)
        tl.store(mean_ptr + rows, mean, mask=rmask)
        tl.store(rstd_ptr + rows, rstd, mask=rmask)
        xhat = d * rstd[:, None]
        share_gamma += tl.sum(gn * xhat, axis=0)
        share_beta += tl.sum(gn, axis=0)
        gn = gn * gamma[None, :]   # dL/dxhat (in place of dL/dn: three row tiles live, not four)
        c1 = tl.sum(gn * xhat, axis=1) / K
        c2 = tl.sum(gn, axis=1) / K
        dx = rstd[:, None] * (gn - xhat * c1[:, None] - c2[:, None])
        tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=m)
    record = part_ptr + pid.to(tl.int64) * 2 * K
    tl.store(record + ks, share_gamma, mask=kmask)
    tl.store(record + K + ks, share_beta, mask=kmask)
    if _last_to_finish(counter_ptr, P):
        total_gamma = tl.zeros((BLOCK_K,), dtype=tl.float32)
        total_beta = tl.zeros((BLOCK_K,), dtype=tl.float32)
        for p0 in range(0, P, BLOCK_P):
            ps = p0 + tl.arange(0, BLOCK_P)
            m = (ps < P)[:, None] & kmask[None, :]
            offs = ps.to(tl.int64)[:, None] * 2 * K + ks[None, :]
            total_gamma += tl.sum(tl.load(part_ptr + offs, mask=m, other=0.0, cache_modifier='.cg'), axis=0)
            total_beta += tl.sum(tl.load(part_ptr + K + offs, mask=m, other=0.0, cache_modifier='.cg'),
                                 axis=0)
        tl.store(dgamma_ptr + ks, total_gamma.to(dgamma_ptr.dtype.element_ty), mask=kmask)
        tl.store(dbeta_ptr + ks, total_beta.to(dbeta_ptr.dtype.element_ty), mask=kmask)


@triton.jit
def _gelu_dx_kernel(g_ptr, w_ptr, h_ptr, dh_ptr, M, K, N,
                    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
                    DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """dL/dh[rows, ks] = (g @ W)[rows, ks] * gelu'(h[rows, ks]); g (M, N), W (N, K), h (M, K)."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < M
    ks = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    kmask = ks < K
    acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    acc = _grad_at_input(g_ptr, w_ptr, rows, rmask, ks, kmask, N, K, acc, BLOCK_N, DOT_PRECISION, UPCAST)
    m = rmask[:, None] & kmask[None, :]
    offs = rows.to(tl.int64)[:, None] * K + ks[None, :]
    _, slope = _gelu_and_grad(tl.load(h_ptr + offs, mask=m, other=0.0).to(tl.float32))
    tl.store(dh_ptr + offs, (acc * slope).to(dh_ptr.dtype.element_ty), mask=m)


@triton.jit
def _store_weight_grads(dw_ptr, db_ptr, ns, nmask, ks, kmask, K, acc, acc_bias, first_k_tile):
    tl.store(dw_ptr + ns.to(tl.int64)[:, None] * K + ks[None, :], acc.to(dw_ptr.dtype.element_ty),
             mask=nmask[:, None] & kmask[None, :])
    if first_k_tile:
        tl.store(db_ptr + ns, acc_bias.to(db_ptr.dtype.element_ty), mask=nmask)


@triton.jit
def _chain_dw_kernel(
        g0_ptr, g1_ptr, a_ptr, mean_ptr, rstd_ptr, gamma_ptr, beta_ptr,
        dw0_ptr, db0_ptr, dw1_ptr, db1_ptr, part_ptr, counter_ptr,
        M, K, N0, N1, split_rows,
        PROLOGUE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_M: tl.constexpr,
        DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """dW_l[n-tile, k-tile] = g_l^T @ prologue(a) and db_l[n-tile] = sum of g_l's rows, over the rows
    of split ``program_id(2)``. Axis 0 runs over layer 0's output tiles, then layer 1's. With one
    split the program stores its sums; with S splits it stores them as record ``split`` of the
    tile's S records and the last split to finish adds them in split order."""
    layer, n0 = _layer_of_tile(tl.program_id(0), N0, N1, BLOCK_N)
    if layer == 0:
        g_ptr, dw_ptr, db_ptr, N = g0_ptr, dw0_ptr, db0_ptr, N0
    else:
        g_ptr, dw_ptr, db_ptr, N = g1_ptr, dw1_ptr, db1_ptr, N1
    pid_k = tl.program_id(1)
    split = tl.program_id(2)
    S = tl.num_programs(2)
    ns = n0 + tl.arange(0, BLOCK_N)
    nmask = ns < N
    ks = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    kmask = ks < K
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    # the bias gradient's rows are summed as a tile and reduced after the loop: a reduction inside
    # the loop of a tile that also feeds tl.dot stops Triton's compiler (3.7, float32 tiles)
    bias_tile = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    start = split * split_rows
    stop = tl.minimum(M, start + split_rows)
    for m0 in range(start, stop, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M)
        rmask = rows < stop
        gt = tl.load(g_ptr + rows.to(tl.int64)[None, :] * N + ns[:, None],
                     mask=nmask[:, None] & rmask[None, :], other=0.0)
        mean = tl.zeros((BLOCK_M,), dtype=tl.float32)
        rstd = tl.zeros((BLOCK_M,), dtype=tl.float32)
        if PROLOGUE == LN:
            mean = tl.load(mean_ptr + rows, mask=rmask, other=0.0)
            rstd = tl.load(rstd_ptr + rows, mask=rmask, other=0.0)
        a = _prologue(a_ptr, rows, rmask, ks, K, mean, rstd, gamma_ptr, beta_ptr, PROLOGUE)
        dt = g_ptr.dtype.element_ty
        acc = tl.dot(_operand(gt, dt, UPCAST), _operand(a, dt, UPCAST), acc, input_precision=DOT_PRECISION)
        bias_tile += gt.to(tl.float32)
    acc_bias = tl.sum(bias_tile, axis=1)
    if S == 1:
        _store_weight_grads(dw_ptr, db_ptr, ns, nmask, ks, kmask, K, acc, acc_bias, pid_k == 0)
    else:
        REC: tl.constexpr = BLOCK_N * BLOCK_K + BLOCK_N
        tile = tl.program_id(0) * tl.num_programs(1) + pid_k
        tile_records = part_ptr + tile.to(tl.int64) * S * REC
        square = tl.arange(0, BLOCK_N)[:, None] * BLOCK_K + tl.arange(0, BLOCK_K)[None, :]
        record = tile_records + split * REC
        tl.store(record + square, acc)
        tl.store(record + BLOCK_N * BLOCK_K + tl.arange(0, BLOCK_N), acc_bias)
        if _last_to_finish(counter_ptr + tile, S):
            acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
            acc_bias = tl.zeros((BLOCK_N,), dtype=tl.float32)
            for s in range(0, S):
                record = tile_records + s * REC
                acc += tl.load(record + square, cache_modifier='.cg')
                acc_bias += tl.load(record + BLOCK_N * BLOCK_K + tl.arange(0, BLOCK_N), cache_modifier='.cg')
            _store_weight_grads(dw_ptr, db_ptr, ns, nmask, ks, kmask, K, acc, acc_bias, pid_k == 0)


# ----------------------------------------------------------------------------------------------
# Launchers (checked inputs, at least one row)


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, t.shape[-1]).contiguous()


def _pair(items: list):
    """(item 0, item 1): a single layer's item stands in for the absent second one (never read)."""
    return items[0], items[1] if len(items) > 1 else items[0]


def _chain_fwd(prologue: int, x: torch.Tensor, gamma, beta, eps: float, weights, biases,
               cfg: ChainLaunchConfig) -> list[torch.Tensor]:
    x2 = _rows(x)
    M, K = x2.shape
    weights = [w.contiguous() for w in weights]
    outs = [torch.empty((*x.shape[:-1], w.shape[0]), dtype=x.dtype, device=x.device) for w in weights]
    n = [w.shape[0] for w in weights] + [0]
    grid = (triton.cdiv(M, cfg.block_m), sum(triton.cdiv(v, cfg.block_n) for v in n))
    w0, w1 = _pair(weights)
    b0, b1 = _pair(biases)
    o0, o1 = _pair(outs)
    launcher(_chain_fwd_kernel)[grid](
        x2, gamma, beta, w0, b0, o0, w1, b1, o1, M, K, n[0], n[1], eps,
        PROLOGUE=prologue, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
        DOT_PRECISION=cfg.dot_precision, UPCAST=cfg.upcast_dots, num_warps=cfg.num_warps)
    return outs


def _weight_grads(prologue: int, grads: list[torch.Tensor], a2: torch.Tensor, mean, rstd, gamma, beta,
                  weights, biases, cfg: ChainLaunchConfig) -> tuple[list, list]:
    """dW_l and db_l of every layer by one launch of :func:`_chain_dw_kernel`."""
    M, K = a2.shape
    dev = a2.device
    dws = [torch.empty(w.shape, dtype=w.dtype, device=dev) for w in weights]
    dbs = [torch.empty(b.shape, dtype=b.dtype, device=dev) for b in biases]
    n = [w.shape[0] for w in weights] + [0]
    tiles_n = sum(triton.cdiv(v, cfg.block_n) for v in n)
    tiles_k = triton.cdiv(K, cfg.block_k)
    rec = cfg.block_n * cfg.block_k + cfg.block_n
    part = torch.empty((tiles_n * tiles_k * cfg.splits * rec if cfg.splits > 1 else 1,),
                       dtype=torch.float32, device=dev)
    counters = chunk_counters(tiles_n * tiles_k, dev)
    g0, g1 = _pair(grads)
    dw0, dw1 = _pair(dws)
    db0, db1 = _pair(dbs)
    launcher(_chain_dw_kernel)[(tiles_n, tiles_k, cfg.splits)](
        g0, g1, a2, mean, rstd, gamma, beta, dw0, db0, dw1, db1, part, counters,
        M, K, n[0], n[1], cfg.split_rows,
        PROLOGUE=prologue, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, BLOCK_M=cfg.dw_block_m,
        DOT_PRECISION=cfg.dot_precision, UPCAST=cfg.upcast_dots, num_warps=cfg.num_warps)
    return dws, dbs


def norm_linears_fwd(x, gamma, beta, eps: float, weights, biases, cfg: ChainLaunchConfig):
    """The outputs of ``norm_linears`` by one launch."""
    return _chain_fwd(1, x, gamma, beta, eps, weights, biases, cfg)


def norm_linears_bwd(grads, x, gamma, beta, eps: float, weights, biases, cfg: ChainLaunchConfig):
    """[dx, dgamma, dbeta, *dW, *db] of ``norm_linears`` by two launches."""
    x2 = _rows(x)
    M, K = x2.shape
    dev = x.device
    grads = [_rows(g) for g in grads]
    weights = [w.contiguous() for w in weights]
    dx = torch.empty((M, K), dtype=x.dtype, device=dev)
    mean = torch.empty((M,), dtype=torch.float32, device=dev)
    rstd = torch.empty((M,), dtype=torch.float32, device=dev)
    part = torch.empty((cfg.dx_programs, 2, K), dtype=torch.float32, device=dev)
    dgamma = torch.empty(gamma.shape, dtype=gamma.dtype, device=dev)
    dbeta = torch.empty(beta.shape, dtype=beta.dtype, device=dev)
    g0, g1 = _pair(grads)
    w0, w1 = _pair(weights)
    launcher(_norm_dx_kernel)[(cfg.dx_programs,)](
        g0, w0, g1, w1, x2, gamma, dx, mean, rstd, part, chunk_counters(1, dev), dgamma, dbeta,
        M, K, w0.shape[0], w1.shape[0], eps,
        TWO=len(weights) > 1, BLOCK_M=cfg.dx_block_m, BLOCK_K=cfg.dx_block_k, BLOCK_N=16,
        BLOCK_P=16, DOT_PRECISION=cfg.dot_precision, UPCAST=cfg.upcast_dots, num_warps=cfg.dx_warps)
    dws, dbs = _weight_grads(1, grads, x2, mean, rstd, gamma, beta, weights, biases, cfg)
    return [dx.view(x.shape), dgamma, dbeta] + dws + dbs


def gelu_linear_fwd(h, weight, bias, cfg: ChainLaunchConfig) -> torch.Tensor:
    """The output of ``gelu_linear`` by one launch."""
    return _chain_fwd(2, h, h, h, 0.0, [weight], [bias], cfg)[0]


def gelu_linear_bwd(grad, h, weight, bias, cfg: ChainLaunchConfig):
    """(dh, dW, db) of ``gelu_linear`` by two launches."""
    h2, g2 = _rows(h), _rows(grad)
    M, K = h2.shape
    weight = weight.contiguous()
    dh = torch.empty((M, K), dtype=h.dtype, device=h.device)
    grid = (triton.cdiv(M, cfg.block_m), triton.cdiv(K, cfg.block_k))
    launcher(_gelu_dx_kernel)[grid](
        g2, weight, h2, dh, M, K, weight.shape[0],
        BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k, BLOCK_N=32, DOT_PRECISION=cfg.dot_precision,
        UPCAST=cfg.upcast_dots, num_warps=cfg.num_warps)
    dws, dbs = _weight_grads(2, [g2], h2, h2, h2, h2, h2, [weight], [bias], cfg)
    return dh.view(h.shape), dws[0], dbs[0]


# ----------------------------------------------------------------------------------------------
# The registered ops


def _config(x: torch.Tensor, weights) -> ChainLaunchConfig:
    return chain_launch_config(x.numel() // x.shape[-1], x.shape[-1], [w.shape[0] for w in weights],
                               x.dtype, x.device)


@triton_op('mmmila::norm_linears_triton', mutates_args=())
def norm_linears_triton(x: torch.Tensor, norm_weight: torch.Tensor, norm_bias: torch.Tensor, eps: float,
                        weights: list[torch.Tensor], biases: list[torch.Tensor]) -> list[torch.Tensor]:
    """``[linear(layer_norm(x), w, b) for w, b]`` by one Triton launch; inputs checked by the caller."""
    if x.numel() == 0:
        return [x.new_empty((*x.shape[:-1], w.shape[0])) for w in weights]
    with device_ctx(x):
        return norm_linears_fwd(x, norm_weight, norm_bias, eps, weights, biases, _config(x, weights))


@triton_op('mmmila::norm_linears_triton_backward', mutates_args=())
def norm_linears_triton_backward(grads: list[torch.Tensor], x: torch.Tensor, norm_weight: torch.Tensor,
                                 norm_bias: torch.Tensor, eps: float, weights: list[torch.Tensor],
                                 biases: list[torch.Tensor]) -> list[torch.Tensor]:
    """[dx, d norm_weight, d norm_bias, *d weights, *d biases] by two Triton launches."""
    if x.numel() == 0:
        out = norm_linears_backward_fake(grads, x, norm_weight, norm_bias, eps, weights, biases)
        return [out[0]] + [t.zero_() for t in out[1:]]
    with device_ctx(x):
        return norm_linears_bwd(grads, x, norm_weight, norm_bias, eps, weights, biases,
                                _config(x, weights))


@triton_op('mmmila::gelu_linear_triton', mutates_args=())
def gelu_linear_triton(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``linear(gelu(h), weight, bias)`` by one Triton launch; inputs checked by the caller."""
    if h.numel() == 0:
        return h.new_empty((*h.shape[:-1], weight.shape[0]))
    with device_ctx(h):
        return gelu_linear_fwd(h, weight, bias, _config(h, [weight]))


@triton_op('mmmila::gelu_linear_triton_backward', mutates_args=())
def gelu_linear_triton_backward(grad: torch.Tensor, h: torch.Tensor, weight: torch.Tensor,
                                bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dh, dweight, dbias) by two Triton launches."""
    if h.numel() == 0:
        dh, dw, db = gelu_linear_backward_fake(grad, h, weight, bias)
        return dh, dw.zero_(), db.zero_()
    with device_ctx(h):
        return gelu_linear_bwd(grad, h, weight, bias, _config(h, [weight]))


# Fakes, autograd and the autocast rule shared with the PyTorch ops; the kernels read float32
# weights and biases as they are, so autocast casts only the activations.
register_norm_linears_op(norm_linears_triton, norm_linears_triton_backward, 'norm_linears_triton',
                         cast_weights=False)
register_gelu_linear_op(gelu_linear_triton, gelu_linear_triton_backward, 'gelu_linear_triton',
                        cast_weights=False)
