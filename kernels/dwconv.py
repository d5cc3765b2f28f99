"""The depthwise 3x3 convolution of tokens with its epilogue, as Triton kernels and a registered op.

``torch.ops.mmmila.dwconv_tokens_triton(x, weight, bias, H, W, residual, gate, skip, act)`` is the
CUDA implementation (CPU tensors under the Triton interpreter) of ``mmmila::dwconv_tokens``
(:mod:`mmmila.ops.dwconv`): x (B, N, C) holds the tokens of an (H, W) map in row-major order, and

    p   = depthwise_conv3x3(x, weight, zero padding 1) + bias
    a   = silu(p) if act == 'silu' else p
    s   = a + (x if skip else 0) + (residual or 0)
    out = s * silu(gate) if gate is given else s

The forward is one kernel: each program takes a tile of BLOCK_N consecutive tokens (over the
flattened batch, so a tile may cross from one image to the next) by BLOCK_C channels, reads the 3x3
neighbourhood of each token (out-of-map neighbours are the zero padding) and writes ``out``.

The backward (``dwconv_tokens_triton_backward``) is two kernels:

1. ``_dwconv_bwd_map_kernel``, grid (num_chunks, channel blocks): each program walks a chunk of
   tokens; it recomputes p and s where needed, writes dL/dgate, dL/dresidual and the gradient at
   the conv's output ``gp`` (float32; only when the activation or the gate make it differ from the
   incoming gradient), and accumulates the weight and bias gradients of its chunk in float32.
2. ``_dwconv_bwd_input_kernel``, grid (token tiles + 10, channel blocks): the token-tile programs
   write dL/dx, the transposed convolution of ``gp`` plus the skip's share; the 10 programs after
   them add the chunks' partial gradients of one tap (or of the bias) each and write them in the
   parameters' dtypes. The partials are complete when this launch begins, so the reduction needs
   no launch of its own.

All arithmetic is float32; results are stored in the inputs' dtypes. Offsets are 64-bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from mmmila.ops.dwconv import dwconv_backward_fake, register_dwconv_op

from .common import device_ctx, launcher
from .heuristics import parallel_slots


@dataclass(frozen=True)
class DwconvLaunchConfig:
    """Block sizes and grid of one call.

    Attributes:
        block_n (int): tokens per tile (BLOCK_N) of the forward and the dL/dx kernel.
        map_block_n (int): tokens per tile of the backward's first kernel.
        block_c (int): channels per tile (BLOCK_C), a power of two.
        num_chunks (int): programs per channel block of the backward's first kernel.
        chunk_tokens (int): tokens per such program, a multiple of ``map_block_n``.
        num_warps (int): warps per program (ignored by the interpreter).
    """

    block_n: int
    map_block_n: int
    block_c: int
    num_chunks: int
    chunk_tokens: int
    num_warps: int


def _choose_launch_config(batch: int, height: int, width: int, channels: int, dtype: torch.dtype,
                          device_type: str, num_chunks: int | None = None) -> DwconvLaunchConfig:
    # Sizes from ptxas register reports (sm_80 and sm_90, all three dtypes, all flag sets), not
    # from timing. A row of 64 channels is one or two whole 128-byte transactions; the kernels keep
    # the 3x3 neighbourhood of a tile in registers, so tiles are small: 32 tokens (8 values per
    # thread at 8 warps) for the forward and dL/dx, 16 for the backward's first kernel, which holds
    # the neighbourhood for two passes (the conv, then the weight gradient). Fewer channels take
    # the next power of two.
    tokens = batch * height * width
    if tokens >= 2**31:
        raise ValueError(f'{batch} x {height} x {width} tokens: the Triton kernels index tokens in int32')
    block_c = min(64, triton.next_power_of_2(max(channels, 1)))
    block_n, map_block_n = 32, 16
    n_blocks = triton.cdiv(tokens, map_block_n)
    if num_chunks is None:
        # eight programs per SM share the weight-gradient reduction of the backward's first kernel
        num_chunks = triton.cdiv(parallel_slots(torch.device(device_type), per_sm=8),
                                 triton.cdiv(channels, block_c))
    num_chunks = max(1, min(num_chunks, n_blocks))
    chunk_tokens = triton.cdiv(n_blocks, num_chunks) * map_block_n
    num_chunks = max(1, triton.cdiv(tokens, chunk_tokens))   # no empty trailing chunk
    return DwconvLaunchConfig(block_n, map_block_n, block_c, num_chunks, chunk_tokens, 8)


_cached_launch_config = lru_cache(maxsize=256)(_choose_launch_config)


def dwconv_launch_config(batch: int, height: int, width: int, channels: int, dtype: torch.dtype,
                         device_type: str, num_chunks: int | None = None) -> DwconvLaunchConfig:
    """Launch parameters for B images of an (H, W) map of C channels, cached per problem.

    The CUDA choices are reasoned defaults for a memory-bound op (not an autotuning result): each
    token's 3x3 neighbourhood is read from cache, so traffic is about one read of each input and one
    write of each output. Sizes that are not plain ints (symbolic, while a graph is traced) are not
    cached.

    Args:
        batch (int): B.
        height (int): H.
        width (int): W.
        channels (int): C.
        dtype (torch.dtype): dtype of the tokens (part of the key; no choice depends on it today).
        device_type (str): 'cuda' or 'cpu' (the interpreter).
        num_chunks (int, optional): force the number of chunks of the backward's first kernel
            (tests use it to cover one and many); defaults to a device-based choice.

    Returns:
        DwconvLaunchConfig: the parameters.
    """
    if all(type(v) is int for v in (batch, height, width, channels)):
        return _cached_launch_config(batch, height, width, channels, dtype, device_type, num_chunks)
    return _choose_launch_config(batch, height, width, channels, dtype, device_type, num_chunks)


# ----------------------------------------------------------------------------------------------
# Device helpers
#
# A tile is BLOCK_N consecutive tokens t of the flattened batch (t = b * N + n; int32, as B * N is
# far below 2^31) by BLOCK_C channels. Element offsets are 64-bit. A token's neighbour
# (row + DI, col + DJ) lies at the constant offset (DI * W + DJ) * stride_n from it, in the same
# image whenever it is inside the map, so each tensor's pointers are computed once per tile.


@triton.jit
def _silu_and_grad(t):
    """silu(t) and its derivative sig(t) * (1 + t * (1 - sig(t))), both float32."""
    sig = tl.sigmoid(t)
    return t * sig, sig * (1.0 + t * (1.0 - sig))


@triton.jit
def _tile(t0, N, W, limit, channels, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    """Tokens from ``t0`` (those below ``limit`` are valid), their row and column in the map, the
    channels of this program's block (axis 1 of the grid), and the tile's (BLOCK_N, BLOCK_C) mask."""
    t = t0 + tl.arange(0, BLOCK_N)
    n = t % N
    chan = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (t < limit)[:, None] & (chan < channels)[None, :]
    return t, n // W, n % W, chan, mask


@triton.jit
def _tile_ptrs(ptr, t, N, chan, stride_b, stride_n, stride_c):
    """Pointers to the tile of a (B, N, C) tensor with the given strides."""
    rows = (t // N).to(tl.int64) * stride_b + (t % N).to(tl.int64) * stride_n
    return ptr + rows[:, None] + chan.to(tl.int64)[None, :] * stride_c


@triton.jit
def _out_offsets(t, chan, channels):
    """Offsets of the tile in a contiguous (B, N, C) tensor (every output is one)."""
    return t.to(tl.int64)[:, None] * channels + chan[None, :]


@triton.jit
def _load(ptrs, mask):
    """Load a tile as float32; masked entries are 0."""
    return tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _store(ptrs, mask, value):
    """Store a float32 tile in the dtype of ``ptrs``."""
    tl.store(ptrs, value.to(ptrs.dtype.element_ty), mask=mask)


@triton.jit
def _neighbour(ptrs, mask, row, col, H, W, stride_n, DI: tl.constexpr, DJ: tl.constexpr):
    """The tile at the neighbours (row + DI, col + DJ) of its tokens; 0 outside the map."""
    inside = (row + DI >= 0) & (row + DI < H) & (col + DJ >= 0) & (col + DJ < W)
    return _load(ptrs + (DI * W + DJ).to(tl.int64) * stride_n, mask & inside[:, None])


@triton.jit
def _conv3x3(ptrs, mask, row, col, H, W, stride_n, w_ptr, chan, channels,
             stride_wc, stride_wi, stride_wj, TRANSPOSED: tl.constexpr,
             BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    """Depthwise 3x3 correlation (zero padding 1) of a tile, float32 (BLOCK_N, BLOCK_C).

    TRANSPOSED takes the neighbour on the opposite side for each tap (the 180-degree-flipped
    kernel): the gradient of the correlation with respect to its input.
    """
    acc = tl.zeros((BLOCK_N, BLOCK_C), dtype=tl.float32)
    for i in tl.static_range(3):
        for j in tl.static_range(3):
            w = _load(w_ptr + chan * stride_wc + i * stride_wi + j * stride_wj, chan < channels)
            if TRANSPOSED:
                v = _neighbour(ptrs, mask, row, col, H, W, stride_n, 1 - i, 1 - j)
            else:
                v = _neighbour(ptrs, mask, row, col, H, W, stride_n, i - 1, j - 1)
            acc += v * w[None, :]
    return acc


@triton.jit
def _pre_gate(p, x, res_ptrs, mask, SILU: tl.constexpr, SKIP: tl.constexpr, HAS_RES: tl.constexpr):
    """s = act(p) + skip * x + residual of a tile (x: the tile's own tokens, float32)."""
    s = p
    if SILU:
        s = p * tl.sigmoid(p)
    if SKIP:
        s += x
    if HAS_RES:
        s += _load(res_ptrs, mask)
    return s


# ----------------------------------------------------------------------------------------------
# Kernels


@triton.jit
def _dwconv_fwd_kernel(
        x_ptr, w_ptr, b_ptr, res_ptr, gate_ptr, out_ptr,
        T, N, H, W, channels,
        stride_xb, stride_xn, stride_xc, stride_rb, stride_rn, stride_rc,
        stride_gb, stride_gn, stride_gc, stride_wc, stride_wi, stride_wj, stride_bias,
        SILU: tl.constexpr, SKIP: tl.constexpr, HAS_RES: tl.constexpr, HAS_GATE: tl.constexpr,
        BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    """out of one tile of BLOCK_N tokens (of the flattened batch, T = B * N) x BLOCK_C channels."""
    t, row, col, chan, mask = _tile(tl.program_id(0) * BLOCK_N, N, W, T, channels, BLOCK_N, BLOCK_C)
    x_ptrs = _tile_ptrs(x_ptr, t, N, chan, stride_xb, stride_xn, stride_xc)
    p = _conv3x3(x_ptrs, mask, row, col, H, W, stride_xn, w_ptr, chan, channels,
                 stride_wc, stride_wi, stride_wj, False, BLOCK_N, BLOCK_C)
    p += _load(b_ptr + chan * stride_bias, chan < channels)[None, :]
    x = _load(x_ptrs, mask) if SKIP else p
    s = _pre_gate(p, x, _tile_ptrs(res_ptr, t, N, chan, stride_rb, stride_rn, stride_rc), mask,
                  SILU, SKIP, HAS_RES)
    if HAS_GATE:
        gate = _load(_tile_ptrs(gate_ptr, t, N, chan, stride_gb, stride_gn, stride_gc), mask)
        s = s * (gate * tl.sigmoid(gate))
    _store(out_ptr + _out_offsets(t, chan, channels), mask, s)


@triton.jit
def _dwconv_bwd_map_kernel(
        grad_ptr, x_ptr, w_ptr, b_ptr, res_ptr, gate_ptr, gp_ptr, dres_ptr, dgate_ptr, part_ptr,
        T, N, H, W, channels, chunk_tokens,
        stride_db, stride_dn, stride_dc, stride_xb, stride_xn, stride_xc,
        stride_rb, stride_rn, stride_rc, stride_gb, stride_gn, stride_gc,
        stride_wc, stride_wi, stride_wj, stride_bias,
        SILU: tl.constexpr, SKIP: tl.constexpr, HAS_RES: tl.constexpr, HAS_GATE: tl.constexpr,
        BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    """gp, dL/dgate and dL/dresidual of one chunk of tokens, and its partial dL/dweight, dL/dbias.

    Partials go to ``part_ptr`` (10, num_chunks, C) float32: rows 0-8 the taps (i * 3 + j), row 9
    the bias (``acc`` has 16 rows, a power of two; rows 10-15 stay 0).
    """
    chunk = tl.program_id(0)
    start = chunk * chunk_tokens
    end = tl.minimum(start + chunk_tokens, T)
    taps = tl.arange(0, 16)
    acc = tl.zeros((16, BLOCK_C), dtype=tl.float32)
    for t0 in range(start, end, BLOCK_N):
        t, row, col, chan, mask = _tile(t0, N, W, end, channels, BLOCK_N, BLOCK_C)
        x_ptrs = _tile_ptrs(x_ptr, t, N, chan, stride_xb, stride_xn, stride_xc)
        gp = _load(_tile_ptrs(grad_ptr, t, N, chan, stride_db, stride_dn, stride_dc), mask)
        if SILU or HAS_GATE:
            p = _conv3x3(x_ptrs, mask, row, col, H, W, stride_xn, w_ptr, chan, channels,
                         stride_wc, stride_wi, stride_wj, False, BLOCK_N, BLOCK_C)
            p += _load(b_ptr + chan * stride_bias, chan < channels)[None, :]
            offs = _out_offsets(t, chan, channels)
            if HAS_GATE:
                x = _load(x_ptrs, mask) if SKIP else p
                s = _pre_gate(p, x, _tile_ptrs(res_ptr, t, N, chan, stride_rb, stride_rn, stride_rc),
                              mask, SILU, SKIP, HAS_RES)
                gate = _load(_tile_ptrs(gate_ptr, t, N, chan, stride_gb, stride_gn, stride_gc), mask)
                silu_gate, dsilu_gate = _silu_and_grad(gate)
                _store(dgate_ptr + offs, mask, gp * s * dsilu_gate)
                gp = gp * silu_gate
                if HAS_RES:
                    _store(dres_ptr + offs, mask, gp)
            if SILU:
                gp = gp * _silu_and_grad(p)[1]
            _store(gp_ptr + offs, mask, gp)
        acc += tl.where(taps[:, None] == 9, tl.sum(gp, axis=0)[None, :], 0.0)
        for i in tl.static_range(3):
            for j in tl.static_range(3):
                xs = _neighbour(x_ptrs, mask, row, col, H, W, stride_xn, i - 1, j - 1)
                acc += tl.where(taps[:, None] == i * 3 + j, tl.sum(gp * xs, axis=0)[None, :], 0.0)
    chan = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    rows = taps.to(tl.int64) * tl.num_programs(0) + chunk
    tl.store(part_ptr + rows[:, None] * channels + chan[None, :], acc,
             mask=(taps[:, None] < 10) & (chan[None, :] < channels))


@triton.jit
def _dwconv_bwd_input_kernel(
        gp_ptr, grad_ptr, gate_ptr, w_ptr, dx_ptr, part_ptr, dw_ptr, db_ptr,
        T, N, H, W, channels, num_chunks,
        stride_pb, stride_pn, stride_pc, stride_db, stride_dn, stride_dc,
        stride_gb, stride_gn, stride_gc, stride_wc, stride_wi, stride_wj,
        SKIP: tl.constexpr, HAS_GATE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr,
        BLOCK_K: tl.constexpr):
    """Two roles by program, one launch. Programs below cdiv(T, BLOCK_N) on axis 0: dL/dx of one tile,
    the transposed convolution of gp plus the gradient through the skip. The 10 programs after them:
    the weight's and bias's gradients (:func:`_reduce_tap`), from the partials the map kernel wrote
    before this launch began."""
    tiles = tl.cdiv(T, BLOCK_N)
    if tl.program_id(0) >= tiles:
        _reduce_tap(tl.program_id(0) - tiles, part_ptr, dw_ptr, db_ptr, num_chunks, channels,
                    BLOCK_K, BLOCK_C)
    else:
        t, row, col, chan, mask = _tile(tl.program_id(0) * BLOCK_N, N, W, T, channels, BLOCK_N, BLOCK_C)
        dx = _conv3x3(_tile_ptrs(gp_ptr, t, N, chan, stride_pb, stride_pn, stride_pc), mask, row, col,
                      H, W, stride_pn, w_ptr, chan, channels, stride_wc, stride_wi, stride_wj, True,
                      BLOCK_N, BLOCK_C)
        if SKIP:
            gs = _load(_tile_ptrs(grad_ptr, t, N, chan, stride_db, stride_dn, stride_dc), mask)
            if HAS_GATE:
                gate = _load(_tile_ptrs(gate_ptr, t, N, chan, stride_gb, stride_gn, stride_gc), mask)
                gs = gs * (gate * tl.sigmoid(gate))
            dx += gs
        _store(dx_ptr + _out_offsets(t, chan, channels), mask, dx)


@triton.jit
def _reduce_tap(tap, part_ptr, dw_ptr, db_ptr, num_chunks, channels,
                BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr):
    """The gradient of one tap (i * 3 + j, or 9 for the bias) for the block of channels of axis 1:
    the sum of the chunks' partials, BLOCK_K chunks at a time, stored in the parameter's dtype."""
    chan = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = chan < channels
    base = part_ptr + tap.to(tl.int64) * num_chunks * channels
    acc = tl.zeros((BLOCK_K, BLOCK_C), dtype=tl.float32)
    for k0 in range(0, num_chunks, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        acc += tl.load(base + k.to(tl.int64)[:, None] * channels + chan[None, :],
                       mask=(k < num_chunks)[:, None] & cmask[None, :], other=0.0)
    total = tl.sum(acc, axis=0)
    if tap < 9:
        tl.store(dw_ptr + chan * 9 + tap, total.to(dw_ptr.dtype.element_ty), mask=cmask)
    else:
        tl.store(db_ptr + chan, total.to(db_ptr.dtype.element_ty), mask=cmask)


# ----------------------------------------------------------------------------------------------
# Launchers


def _strides(t: torch.Tensor | None) -> tuple[int, int, int]:
    return (0, 0, 0) if t is None else t.stride()


def _weight_strides(weight: torch.Tensor) -> tuple[int, int, int]:
    return weight.stride(0), weight.stride(2), weight.stride(3)


def dwconv_fwd(x, weight, bias, hw: tuple[int, int], residual, gate, skip: bool, act: str,
               cfg: DwconvLaunchConfig) -> torch.Tensor:
    """Launch the forward kernel on checked inputs; returns out (B, N, C) in x's dtype."""
    B, N, C = x.shape
    T = B * N
    out = torch.empty((B, N, C), dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(T, cfg.block_n), triton.cdiv(C, cfg.block_c))
    launcher(_dwconv_fwd_kernel)[grid](
        x, weight, bias, x if residual is None else residual, x if gate is None else gate, out,
        T, N, hw[0], hw[1], C,
        *x.stride(), *_strides(residual), *_strides(gate), *_weight_strides(weight), bias.stride(0),
        SILU=act == 'silu', SKIP=skip, HAS_RES=residual is not None, HAS_GATE=gate is not None,
        BLOCK_N=cfg.block_n, BLOCK_C=cfg.block_c, num_warps=cfg.num_warps)
    return out


def dwconv_bwd(grad, x, weight, bias, hw: tuple[int, int], residual, gate, skip: bool, act: str,
               cfg: DwconvLaunchConfig):
    """Launch the backward kernels on checked inputs; returns (dx, dweight, dbias, dres, dgate)."""
    B, N, C = x.shape
    T = B * N
    silu, has_gate, has_res = act == 'silu', gate is not None, residual is not None
    dev = x.device
    # Outputs that are not computed are empty (and distinct: an op's outputs may not alias).
    dgate = torch.empty((B, N, C) if has_gate else 0, dtype=x.dtype, device=dev)
    dres = torch.empty((B, N, C) if has_gate and has_res else 0, dtype=x.dtype, device=dev)
    # gp differs from the incoming gradient only through the gate or the activation.
    gp = torch.empty((B, N, C), dtype=torch.float32, device=dev) if silu or has_gate else grad
    part = torch.empty((10, cfg.num_chunks, C), dtype=torch.float32, device=dev)
    c_blocks = triton.cdiv(C, cfg.block_c)
    w_strides = _weight_strides(weight)
    launcher(_dwconv_bwd_map_kernel)[(cfg.num_chunks, c_blocks)](
        grad, x, weight, bias, x if residual is None else residual, x if gate is None else gate,
        gp, dres, dgate, part, T, N, hw[0], hw[1], C, cfg.chunk_tokens,
        *grad.stride(), *x.stride(), *_strides(residual), *_strides(gate), *w_strides, bias.stride(0),
        SILU=silu, SKIP=skip, HAS_RES=has_res, HAS_GATE=has_gate,
        BLOCK_N=cfg.map_block_n, BLOCK_C=cfg.block_c, num_warps=cfg.num_warps)
    dx = torch.empty((B, N, C), dtype=x.dtype, device=dev)
    dweight = torch.empty(weight.shape, dtype=weight.dtype, device=dev)
    dbias = torch.empty((C,), dtype=bias.dtype, device=dev)
    launcher(_dwconv_bwd_input_kernel)[(triton.cdiv(T, cfg.block_n) + 10, c_blocks)](
        gp, grad, x if gate is None else gate, weight, dx, part, dweight, dbias, T, N, hw[0], hw[1], C,
        cfg.num_chunks, *gp.stride(), *grad.stride(), *_strides(gate), *w_strides,
        SKIP=skip, HAS_GATE=has_gate, BLOCK_N=cfg.block_n, BLOCK_C=cfg.block_c, BLOCK_K=32,
        num_warps=cfg.num_warps)
    return dx, dweight, dbias, dres, dgate


# ----------------------------------------------------------------------------------------------
# The registered ops


def _config_for(x: torch.Tensor, hw: tuple[int, int]) -> DwconvLaunchConfig:
    return dwconv_launch_config(x.shape[0], hw[0], hw[1], x.shape[2], x.dtype, x.device.type)


@triton_op('mmmila::dwconv_tokens_triton', mutates_args=())
def dwconv_tokens_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, height: int,
                         width: int, residual: torch.Tensor | None, gate: torch.Tensor | None,
                         skip: bool, act: str) -> torch.Tensor:
    """out of the fused depthwise conv by one Triton kernel; inputs are checked by the caller."""
    if x.numel() == 0:   # an empty batch, map or channel axis: nothing to launch
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)
    with device_ctx(x):
        return dwconv_fwd(x, weight, bias, (height, width), residual, gate, skip, act,
                          _config_for(x, (height, width)))


@triton_op('mmmila::dwconv_tokens_triton_backward', mutates_args=())
def dwconv_tokens_triton_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                                  bias: torch.Tensor, height: int, width: int,
                                  residual: torch.Tensor | None, gate: torch.Tensor | None,
                                  skip: bool, act: str
                                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                             torch.Tensor, torch.Tensor]:
    """(dx, dweight, dbias, dresidual, dgate) of :func:`dwconv_tokens_triton` by three kernels."""
    if x.numel() == 0:
        dx, dweight, dbias, dres, dgate = dwconv_backward_fake(grad, x, weight, bias, height, width,
                                                               residual, gate, skip, act)
        return dx, dweight.zero_(), dbias.zero_(), dres, dgate
    with device_ctx(x):
        return dwconv_bwd(grad, x, weight, bias, (height, width), residual, gate, skip, act,
                          _config_for(x, (height, width)))


# Fakes, autograd and autocast shared with the PyTorch op; shape propagation by allocation only
# (triton_op's default traces the launchers, whose launch configuration reads the sizes).
register_dwconv_op(dwconv_tokens_triton, dwconv_tokens_triton_backward, 'dwconv_tokens_triton',
                   cast_params=False)
