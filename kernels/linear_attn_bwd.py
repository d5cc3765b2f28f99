"""Backward kernels of MILA's linear attention and their launcher :func:`mila_attn_bwd`.

Per (batch, head), with g = dL/do (docs/kernel_math.md, "Backward"):

A. ``_mila_attn_bwd_reduce_kernel``, grid (num_chunks, B * nh): recomputes q, q_r and z per tile,
   accumulates the partial dS = sum z q_r^T g (d x d) and dm = -sum dz z^2 q (d) in float32, and,
   since dL/dq needs only the forward's S and m, also writes dL/da = dL/dq * phi'(a) for the
   tile (the first C channels of dL/dqk). The last program of each (batch, head) to finish adds the
   chunks' partials (and dL/dS, dL/dm when S and m have gradients of their own) and scales them by
   1/N: the dS/N and dm/N that pass B reads.
B. ``_mila_attn_bwd_map_kernel``, grid (cdiv(N, BLOCK_N), B * nh): recomputes k and k_r and
   writes dL/dc = (R^T (v dS^T) / N + dm / N) * phi'(c) and dL/dv = k_r dS / N.

Writing dL/da in pass A means pass B never reads q or g again: per token the backward reads
q, g, k, v once and writes dqk, dv once (7 C elements instead of 9 C with dq in pass B).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import (EPS, _dphi, _finish_head_sums, _head_ptr, _load_halves, _load_pairs, _load_tile,
                     _load_vec_halves, _phi, _program_head, _rope_cos_sin, _store_halves, _store_tile,
                     _token_tile, launch_buffers, launcher)
from .heuristics import LaunchConfig


@triton.jit
def _mila_attn_bwd_reduce_kernel(
        qk_ptr, g_ptr, s_ptr, m_ptr, rope_ptr, dqk_ptr, part_ptr, counter_ptr, grad_s_ptr, grad_m_ptr,
        ds_ptr, dm_ptr, N, width, channels, num_heads, chunk_tokens,
        stride_qk_b, stride_qk_n, stride_qk_c, stride_g_b, stride_g_n, stride_g_c,
        stride_dqk_b, stride_dqk_n, stride_dqk_c,
        D: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr, HAS_GRAD_SM: tl.constexpr):
    """Partial dS and dm of one token chunk, and dL/da of its tokens, for one (batch, head); the last
    chunk to finish writes (dS + dL/dS) / N and (dm + dL/dm) / N (the extra terms when HAS_GRAD_SM)."""
    HALF: tl.constexpr = D // 2
    chunk = tl.program_id(0)
    bh, batch, head = _program_head(num_heads)
    chan = tl.arange(0, D)
    q_base = _head_ptr(qk_ptr, batch, stride_qk_b, head * D, stride_qk_c)
    g_base = _head_ptr(g_ptr, batch, stride_g_b, head * D, stride_g_c)
    dq_base = _head_ptr(dqk_ptr, batch, stride_dqk_b, head * D, stride_dqk_c)
    s_even, s_odd = _load_pairs(s_ptr + bh.to(tl.int64) * D * D, HALF, D)
    m_re, m_im = _load_vec_halves(m_ptr + bh.to(tl.int64) * D, HALF)

    acc_even = tl.zeros((HALF, D), dtype=tl.float32)   # rows 2i of dS
    acc_odd = tl.zeros((HALF, D), dtype=tl.float32)
    acc_m_re = tl.zeros((BLOCK_N, HALF), dtype=tl.float32)   # entries 2i of dm, per tile row
    acc_m_im = tl.zeros((BLOCK_N, HALF), dtype=tl.float32)
    start = chunk * chunk_tokens
    end = tl.minimum(start + chunk_tokens, N)
    for n0 in range(start, end, BLOCK_N):
        offs = n0 + tl.arange(0, BLOCK_N)
        mask = offs < end
        a_re, a_im = _load_halves(q_base, offs, mask, stride_qk_n, stride_qk_c, HALF)
        q_re = _phi(a_re)
        q_im = _phi(a_im)
        g = _load_tile(g_base, offs, mask, chan, stride_g_n, stride_g_c)  # 0 on tail rows
        z = 1.0 / (tl.sum(q_re * m_re[None, :], axis=1) + tl.sum(q_im * m_im[None, :], axis=1) + EPS)
        cos, sin = _rope_cos_sin(offs, mask, rope_ptr, head, width, channels, HALF)
        qr_re = q_re * cos - q_im * sin
        qr_im = q_re * sin + q_im * cos
        # g S^T, split by pairs; dz = g . (q_r S) = q_r . (g S^T) needs no product of its own.
        gs_re = tl.dot(g, tl.trans(s_even), input_precision=DOT_PRECISION)
        gs_im = tl.dot(g, tl.trans(s_odd), input_precision=DOT_PRECISION)
        dz = tl.sum(qr_re * gs_re + qr_im * gs_im, axis=1)
        acc_even = tl.dot(tl.trans(qr_re * z[:, None]), g, acc_even, input_precision=DOT_PRECISION)
        acc_odd = tl.dot(tl.trans(qr_im * z[:, None]), g, acc_odd, input_precision=DOT_PRECISION)
        w = dz * z * z
        acc_m_re -= w[:, None] * q_re   # summed over the rows once, after the loop
        acc_m_im -= w[:, None] * q_im
        # dL/dq_r = z g S^T, rotated back (R^T: sin negated), minus dz z^2 m.
        dq_re = (gs_re * cos + gs_im * sin) * z[:, None] - w[:, None] * m_re[None, :]
        dq_im = (gs_im * cos - gs_re * sin) * z[:, None] - w[:, None] * m_im[None, :]
        _store_halves(dq_base, offs, mask, stride_dqk_n, stride_dqk_c,
                      dq_re * _dphi(a_re, q_re), dq_im * _dphi(a_im, q_im), HALF)

    _finish_head_sums(part_ptr, counter_ptr, bh, chunk, tl.num_programs(0), N, acc_even, acc_odd,
                      tl.sum(acc_m_re, axis=0), tl.sum(acc_m_im, axis=0), grad_s_ptr, grad_m_ptr, ds_ptr, dm_ptr, D, HAS_GRAD_SM)


@triton.jit
def _mila_attn_bwd_map_kernel(
        qk_ptr, v_ptr, ds_ptr, dm_ptr, rope_ptr, dqk_ptr, dv_ptr,
        N, width, channels, num_heads,
        stride_qk_b, stride_qk_n, stride_qk_c, stride_v_b, stride_v_n, stride_v_c,
        stride_dqk_b, stride_dqk_n, stride_dqk_c, stride_dv_b, stride_dv_n, stride_dv_c,
        D: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """dL/dc and dL/dv of one tile of tokens of one (batch, head); ``ds``, ``dm`` hold dS/N, dm/N."""
    HALF: tl.constexpr = D // 2
    bh, batch, head = _program_head(num_heads)
    chan = tl.arange(0, D)
    offs, mask = _token_tile(N, BLOCK_N)
    k_base = _head_ptr(qk_ptr, batch, stride_qk_b, channels + head * D, stride_qk_c)
    c_re, c_im = _load_halves(k_base, offs, mask, stride_qk_n, stride_qk_c, HALF)
    k_re = _phi(c_re)
    k_im = _phi(c_im)
    v = _load_tile(_head_ptr(v_ptr, batch, stride_v_b, head * D, stride_v_c), offs, mask, chan,
                   stride_v_n, stride_v_c)
    ds_even, ds_odd = _load_pairs(ds_ptr + bh.to(tl.int64) * D * D, HALF, D)
    dm_re, dm_im = _load_vec_halves(dm_ptr + bh.to(tl.int64) * D, HALF)

    cos, sin = _rope_cos_sin(offs, mask, rope_ptr, head, width, channels, HALF)
    kr_re = k_re * cos - k_im * sin
    kr_im = k_re * sin + k_im * cos
    dv = tl.dot(kr_re, ds_even, input_precision=DOT_PRECISION)
    dv = tl.dot(kr_im, ds_odd, dv, input_precision=DOT_PRECISION)
    # dL/dk_r = v dS^T / N, rotated back, plus dm / N.
    gk_re = tl.dot(v, tl.trans(ds_even), input_precision=DOT_PRECISION)
    gk_im = tl.dot(v, tl.trans(ds_odd), input_precision=DOT_PRECISION)
    dk_re = gk_re * cos + gk_im * sin + dm_re[None, :]
    dk_im = gk_im * cos - gk_re * sin + dm_im[None, :]
    _store_halves(_head_ptr(dqk_ptr, batch, stride_dqk_b, channels + head * D, stride_dqk_c), offs, mask,
                  stride_dqk_n, stride_dqk_c, dk_re * _dphi(c_re, k_re), dk_im * _dphi(c_im, k_im), HALF)
    _store_tile(_head_ptr(dv_ptr, batch, stride_dv_b, head * D, stride_dv_c), offs, mask, chan,
                stride_dv_n, stride_dv_c, dv)


def mila_attn_bwd(grad_out, qk, v, s, m, hw: tuple[int, int], num_heads: int, cfg: LaunchConfig,
                  grad_s=None, grad_m=None):
    """Launch the backward passes: two kernels and the allocations of their outputs, nothing else
    (S, m or a gradient of S or m that is not contiguous is made so first).

    Args:
        grad_out (Tensor): (B, N, C), dL/d(out), any strides, any supported dtype.
        qk (Tensor): (B, N, 2C), the forward's input.
        v (Tensor): (B, N, C), the forward's input.
        s (Tensor): (B, nh, d, d) float32, S = k_r^T v / N from the forward.
        m (Tensor): (B, nh, d) float32, mean(k) from the forward.
        hw (tuple[int, int]): (H, W).
        num_heads (int): nh.
        cfg (LaunchConfig): block sizes, chunking and grids (``heuristics.launch_config``).
        grad_s (Tensor, optional): (B, nh, d, d), dL/dS when S is used besides the output.
        grad_m (Tensor, optional): (B, nh, d), dL/dm likewise; given together with ``grad_s`` or
            not at all (a missing one of the two is taken as zeros).

    Returns:
        tuple[Tensor, Tensor]: dL/dqk (B, N, 2C) in qk's dtype and dL/dv (B, N, C) in v's dtype.
    """
    B, N, C = v.shape
    d = C // num_heads
    device = qk.device
    rope, counters = launch_buffers(torch.sym_max(hw[0], hw[1]), C, cfg.counters, device)
    dqk = torch.empty((B, N, 2 * C), dtype=qk.dtype, device=device)
    dv = torch.empty((B, N, C), dtype=v.dtype, device=device)
    part = torch.empty((cfg.reduce_grid[1], cfg.records, d * d + d), dtype=torch.float32, device=device)
    ds = torch.empty((cfg.reduce_grid[1], d, d), dtype=torch.float32, device=device)   # dS / N
    dm = torch.empty((cfg.reduce_grid[1], d), dtype=torch.float32, device=device)      # dm / N
    s, m = s.contiguous(), m.contiguous()   # as the forward made them: no copy
    has_grad_sm = grad_s is not None or grad_m is not None
    if has_grad_sm:   # S and m are outputs of the op too: their own gradients join dS and dm
        grad_s = s.new_zeros(s.shape) if grad_s is None else grad_s.contiguous()
        grad_m = m.new_zeros(m.shape) if grad_m is None else grad_m.contiguous()
    else:
        grad_s, grad_m = ds, dm   # not read
    launcher(_mila_attn_bwd_reduce_kernel)[cfg.reduce_grid](
        qk, grad_out, s, m, rope, dqk, part, counters, grad_s, grad_m,
        ds, dm, N, hw[1], C, num_heads, cfg.chunk_tokens,
        *qk.stride(), *grad_out.stride(), *dqk.stride(),
        D=d, BLOCK_N=cfg.reduce_block_n, DOT_PRECISION=cfg.dot_precision, HAS_GRAD_SM=has_grad_sm,
        num_warps=cfg.reduce_warps, num_stages=cfg.num_stages)
    launcher(_mila_attn_bwd_map_kernel)[cfg.map_grid](
        qk, v, ds, dm, rope, dqk, dv, N, hw[1], C, num_heads,
        *qk.stride(), *v.stride(), *dqk.stride(), *dv.stride(),
        D=d, BLOCK_N=cfg.block_n, DOT_PRECISION=cfg.dot_precision, num_warps=cfg.map_warps)
    return dqk, dv
