"""Forward kernels of MILA's linear attention and their launcher :func:`mila_attn_fwd`.

Two passes over the tokens (docs/kernel_math.md), per (batch, head):

1. ``_mila_attn_fwd_reduce_kernel``, grid (num_chunks, B * nh): each program walks one chunk of
   tokens in tiles of BLOCK_N, recomputes k = elu(c) + 1 and its rotation, and accumulates the
   partial sums k_r^T v (d x d) and sum(k) (d) in float32. The last program of each (batch, head)
   to finish adds the chunks' partials (in chunk order) and scales them by 1/N: S and m.
2. ``_mila_attn_fwd_map_kernel``, grid (cdiv(N, BLOCK_N), B * nh): each program recomputes
   q = elu(a) + 1, z = 1 / (q . m + eps) and q_r, and writes o = z * (q_r S).

Reads per token: k and v in pass 1, q in pass 2; writes: o. Nothing of size N x C besides the
output is written; S and m are kept for the backward.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import (EPS, _finish_head_sums, _head_ptr, _load_halves, _load_pairs, _load_tile, _load_vec_halves,
                     _phi, _program_head, _rope_cos_sin, _store_tile, _token_tile, launch_buffers, launcher)
from .heuristics import LaunchConfig


@triton.jit
def _mila_attn_fwd_reduce_kernel(
        qk_ptr, v_ptr, rope_ptr, part_ptr, counter_ptr, s_ptr, m_ptr,
        N, width, channels, num_heads, chunk_tokens,
        stride_qk_b, stride_qk_n, stride_qk_c, stride_v_b, stride_v_n, stride_v_c,
        D: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Partial S (D x D, un-normalised) and sum(k) (D) of one token chunk of one (batch, head); the
    last chunk of the (batch, head) to finish writes S = sum / N and m = sum(k) / N."""
    HALF: tl.constexpr = D // 2
    chunk = tl.program_id(0)
    bh, batch, head = _program_head(num_heads)
    chan = tl.arange(0, D)
    k_base = _head_ptr(qk_ptr, batch, stride_qk_b, channels + head * D, stride_qk_c)
    v_base = _head_ptr(v_ptr, batch, stride_v_b, head * D, stride_v_c)

    acc_even = tl.zeros((HALF, D), dtype=tl.float32)   # rows 2i of k_r^T v
    acc_odd = tl.zeros((HALF, D), dtype=tl.float32)    # rows 2i+1
    acc_k_re = tl.zeros((BLOCK_N, HALF), dtype=tl.float32)   # entries 2i of sum(k), per tile row
    acc_k_im = tl.zeros((BLOCK_N, HALF), dtype=tl.float32)
    start = chunk * chunk_tokens
    end = tl.minimum(start + chunk_tokens, N)
    for n0 in range(start, end, BLOCK_N):
        offs = n0 + tl.arange(0, BLOCK_N)
        mask = offs < end
        c_re, c_im = _load_halves(k_base, offs, mask, stride_qk_n, stride_qk_c, HALF)
        k_re = tl.where(mask[:, None], _phi(c_re), 0.0)   # phi(0) = 1: zero the tail rows
        k_im = tl.where(mask[:, None], _phi(c_im), 0.0)
        v = _load_tile(v_base, offs, mask, chan, stride_v_n, stride_v_c)
        acc_k_re += k_re   # summed over the rows once, after the loop
        acc_k_im += k_im
        cos, sin = _rope_cos_sin(offs, mask, rope_ptr, head, width, channels, HALF)
        kr_re = k_re * cos - k_im * sin
        kr_im = k_re * sin + k_im * cos
        acc_even = tl.dot(tl.trans(kr_re), v, acc_even, input_precision=DOT_PRECISION)
        acc_odd = tl.dot(tl.trans(kr_im), v, acc_odd, input_precision=DOT_PRECISION)

    _finish_head_sums(part_ptr, counter_ptr, bh, chunk, tl.num_programs(0), N, acc_even, acc_odd,
                      tl.sum(acc_k_re, axis=0), tl.sum(acc_k_im, axis=0), s_ptr, m_ptr, s_ptr, m_ptr, D, False)


@triton.jit
def _mila_attn_fwd_map_kernel(
        qk_ptr, s_ptr, m_ptr, rope_ptr, out_ptr,
        N, width, channels, num_heads,
        stride_qk_b, stride_qk_n, stride_qk_c, stride_o_b, stride_o_n, stride_o_c,
        D: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """o = z * (q_r S) for one tile of BLOCK_N tokens of one (batch, head)."""
    HALF: tl.constexpr = D // 2
    bh, batch, head = _program_head(num_heads)
    chan = tl.arange(0, D)
    offs, mask = _token_tile(N, BLOCK_N)
    q_base = _head_ptr(qk_ptr, batch, stride_qk_b, head * D, stride_qk_c)
    a_re, a_im = _load_halves(q_base, offs, mask, stride_qk_n, stride_qk_c, HALF)
    q_re = _phi(a_re)
    q_im = _phi(a_im)

    m_re, m_im = _load_vec_halves(m_ptr + bh.to(tl.int64) * D, HALF)
    z = 1.0 / (tl.sum(q_re * m_re[None, :] + q_im * m_im[None, :], axis=1) + EPS)  # un-rotated q, mean k
    cos, sin = _rope_cos_sin(offs, mask, rope_ptr, head, width, channels, HALF)
    s_even, s_odd = _load_pairs(s_ptr + bh.to(tl.int64) * D * D, HALF, D)
    o = tl.dot(q_re * cos - q_im * sin, s_even, input_precision=DOT_PRECISION)
    o = tl.dot(q_re * sin + q_im * cos, s_odd, o, input_precision=DOT_PRECISION)
    o_base = _head_ptr(out_ptr, batch, stride_o_b, head * D, stride_o_c)
    _store_tile(o_base, offs, mask, chan, stride_o_n, stride_o_c, o * z[:, None])


def mila_attn_fwd(qk, v, hw: tuple[int, int], num_heads: int, cfg: LaunchConfig):
    """Launch the forward passes: two kernels and the allocations of their outputs, nothing else.

    Args:
        qk (Tensor): (B, N, 2C), float32 / float16 / bfloat16, any strides.
        v (Tensor): (B, N, C), same device; any of the three dtypes.
        hw (tuple[int, int]): (H, W), H * W = N.
        num_heads (int): nh; d = C / nh is in ``SUPPORTED_HEAD_DIMS`` (32).
        cfg (LaunchConfig): block sizes, chunking and grids (``heuristics.launch_config``).

    Returns:
        tuple[Tensor, Tensor, Tensor]: out (B, N, C) in v's dtype, S (B, nh, d, d) and
        m (B, nh, d), both float32 (S = k_r^T v / N and m = mean(k), per head).
    """
    B, N, C = v.shape
    d = C // num_heads
    device = qk.device
    rope, counters = launch_buffers(torch.sym_max(hw[0], hw[1]), C, cfg.counters, device)
    part = torch.empty((cfg.reduce_grid[1], cfg.records, d * d + d), dtype=torch.float32, device=device)
    s = torch.empty((B, num_heads, d, d), dtype=torch.float32, device=device)
    m = torch.empty((B, num_heads, d), dtype=torch.float32, device=device)
    launcher(_mila_attn_fwd_reduce_kernel)[cfg.reduce_grid](
        qk, v, rope, part, counters, s, m,
        N, hw[1], C, num_heads, cfg.chunk_tokens, *qk.stride(), *v.stride(),
        D=d, BLOCK_N=cfg.reduce_block_n, DOT_PRECISION=cfg.dot_precision,
        num_warps=cfg.reduce_warps, num_stages=cfg.num_stages)
    out = torch.empty((B, N, C), dtype=v.dtype, device=device)
    launcher(_mila_attn_fwd_map_kernel)[cfg.map_grid](
        qk, s, m, rope, out, N, hw[1], C, num_heads, *qk.stride(), *out.stride(),
        D=d, BLOCK_N=cfg.block_n, DOT_PRECISION=cfg.dot_precision, num_warps=cfg.map_warps)
    return out, s, m
