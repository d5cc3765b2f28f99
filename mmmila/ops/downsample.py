"""The Downsample's expansion as one registered op that never holds the expanded map whole.

MILA's Downsample (C -> 2C channels, half the map) runs ``expand`` (a 1x1 conv C -> 8C with bias, then
ReLU), a 3x3 stride-2 depthwise conv on the 8C channels (bias, ReLU), then ``project`` (1x1 conv
8C -> 2C, BatchNorm). The expanded map, 8C channels at full resolution, is the largest activation of
the backbone: 32 MiB at MILA-T's first Downsample for one 512x512 image. Made whole, it costs more
than its matrix product on a CPU: glibc serves a tensor of 32 MiB or more with a fresh ``mmap``, so
each one pays a page fault per 4 KiB (about 8 ms, every time: the expansion, its recomputation, the
ReLU's and the convolution's gradients), and every elementwise pass over it runs from DRAM.

``torch.ops.mmmila.expand_dwconv(x, expand_weight, expand_bias, dw_weight, dw_bias, H, W)`` maps tokens
(B, H W, C) of an (H, W) map (H and W even) to the depthwise conv's ReLU output as tokens
(B, H/2 W/2, 8C)::

    e   = relu(x expand_weight^T + expand_bias)                   # (B, H, W, 8C), never whole
    out = relu(dwconv3x3(e, dw_weight, stride 2, padding 1) + dw_bias)

The PyTorch implementation works on chunks of output rows. Output row r reads input rows 2r - 1,
2r and 2r + 1 (row -1 is the zero padding, which the first chunk's convolution adds), so a chunk of
rows [r0, r1) expands input rows [2r0 - 1, 2r1 - 1] only. Autograd keeps x and the parameters (as
the checkpoint it replaces did), and the backward recomputes chunk by chunk. Neighbouring chunks
share one input row (2r1 - 1): its gradient from the depthwise conv is complete only after the next
chunk, so it carries over (masked by the ReLU in each chunk, which is linear in the gradient), and
the expansion's gradient for that row is taken in the next chunk. On CPU a chunk's expansion holds
as many elements as the attention's chunks (:mod:`.chunks`: about cache-sized, and no allocation
reaches glibc's mmap threshold); on other devices one chunk holds the whole map.

On CPU, for float32 and float64, a chunk runs mmmila's compiled kernels (:mod:`.cpu_kernels`) after
the expansion's matrix product: one pass applies the expansion's ReLU as it reads, convolves and
applies the second ReLU; the backward's two passes (the output's gradient with the taps' sums, then
dL/da) apply both ReLUs' gradients as they go, so the expanded map is not activated, masked or
transposed in passes of its own. :data:`PYTORCH_ROWS` and :data:`COMPILED_ROWS` are the two ways to
compute a chunk; the chunking is the same.

The weight gradients are summed over the chunks in float32 (float64 for float64 inputs). Under
autocast the rule casts the activations and all four parameters to the autocast dtype, as
``F.linear`` and ``F.conv2d`` would. :func:`expand_dwconv_ref` is the same maths in plain ops (for
torch.jit tracing and the TorchScript ONNX exporter).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from . import cpu_kernels
from .autocast import register_autocast_rule
from .chunks import rows_per_chunk
from .layout import as_map, as_tokens, channels_last_depthwise, check_token_map
from .registration import define_device_impl, define_op, mark_backward_op, register_autograd


def check_expand_dwconv_inputs(x: torch.Tensor, expand_weight: torch.Tensor, expand_bias: torch.Tensor,
                               dw_weight: torch.Tensor, dw_bias: torch.Tensor,
                               hw: tuple[int, int]) -> None:
    """Raise a ValueError naming the first thing wrong with the inputs of :func:`expand_dwconv`."""
    B, N, C = check_token_map(x, hw)
    if hw[0] % 2 or hw[1] % 2:
        raise ValueError(f'the map must have even sides (the Downsample pads odd ones), got {tuple(hw)}')
    if expand_weight.dim() != 2 or expand_weight.shape[1] != C:
        raise ValueError(f'expand_weight must be (hidden, C={C}), got {tuple(expand_weight.shape)}')
    hidden = expand_weight.shape[0]
    expected = {'expand_bias': (hidden,), 'dw_weight': (hidden, 1, 3, 3), 'dw_bias': (hidden,)}
    for name, t in (('expand_bias', expand_bias), ('dw_weight', dw_weight), ('dw_bias', dw_bias)):
        if t is None or tuple(t.shape) != expected[name]:
            raise ValueError(f'{name} must be {expected[name]}, got {None if t is None else tuple(t.shape)}')
    for name, t in (('expand_weight', expand_weight), ('expand_bias', expand_bias),
                    ('dw_weight', dw_weight), ('dw_bias', dw_bias)):
        if t.device != x.device:
            raise ValueError(f'{name} is on {t.device} but x is on {x.device}')


def expand_dwconv_ref(x: torch.Tensor, expand_weight: torch.Tensor, expand_bias: torch.Tensor,
                      dw_weight: torch.Tensor, dw_bias: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """The op's maths in plain autograd ops, on the whole map."""
    e = F.relu(F.linear(x, expand_weight, expand_bias))
    p = F.conv2d(as_map(e, hw), dw_weight, dw_bias, stride=2, padding=1, groups=expand_weight.shape[0])
    return as_tokens(F.relu(p)).contiguous()


# ---- the PyTorch implementation ------------------------------------------------------------------
def _chunk_rows(batch: int, width: int, hidden: int, out_rows: int, device: torch.device) -> int:
    """Output rows per chunk (:mod:`.chunks`): r of them expand 2r + 1 input rows, 2 per output row."""
    return rows_per_chunk(out_rows, 2 * batch * width * hidden, device)


def _expansion_rows(x_map: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, first: int,
                    last: int, buffer: torch.Tensor | None = None) -> torch.Tensor:
    """The expansion before its ReLU of input rows [max(first, 0), last] of x_map (B, H, W, C):
    (B, rows, W, hidden), contiguous; written into the front of ``buffer`` (a flat tensor of x's dtype,
    reused by every chunk of a call) when given."""
    rows = x_map[:, max(first, 0):last + 1]
    if buffer is None or buffer.dtype != x_map.dtype:
        return F.linear(rows, weight, bias)
    shape = (*rows.shape[:-1], weight.shape[0])
    out = buffer[:rows[..., 0].numel() * weight.shape[0]].view(shape)
    torch.addmm(bias.to(weight.dtype), rows.reshape(-1, rows.shape[-1]), weight.t(), out=out.view(-1, shape[-1]))
    return out


def _expanded_rows(x_map: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, first: int,
                   last: int, buffer: torch.Tensor | None = None) -> torch.Tensor:
    """relu(expand) of input rows [max(first, 0), last] of x_map, in place on :func:`_expansion_rows`."""
    return F.relu_(_expansion_rows(x_map, weight, bias, first, last, buffer))


def _dwconv(e: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, first: int) -> torch.Tensor:
    """The stride-2 depthwise conv of a chunk's expanded rows (B, rows, W, hidden), read as a
    channels-last map: zero padding above only for the chunk that starts at the top (``first`` is
    row -1), as the chunk holds every other row it reads."""
    return F.conv2d(e.permute(0, 3, 1, 2), weight, bias, stride=2, padding=(int(first < 0), 1),
                    groups=weight.shape[0])


def _forward_rows(x_map, expand_weight, expand_bias, dw_weight, dw_bias, r0: int, r1: int,
                  buffer: torch.Tensor | None = None) -> torch.Tensor:
    """Output rows [r0, r1) as (B, r1 - r0, W/2, hidden) (a view of a channels-last map); the chunk's
    expansion in ``buffer`` (see :func:`_expansion_rows`)."""
    e = _expanded_rows(x_map, expand_weight, expand_bias, 2 * r0 - 1, 2 * r1 - 1, buffer)
    return F.relu_(_dwconv(e, channels_last_depthwise(dw_weight), dw_bias, 2 * r0 - 1)).permute(0, 2, 3, 1)


def _backward_rows(g_map, x_map, expand_weight, expand_bias, dw_weight, dw_bias, r0: int, r1: int,
                   buffer: torch.Tensor | None = None):
    """For output rows [r0, r1): dL/da of the input rows [max(2 r0 - 1, 0), 2 r1 - 1] they read (a the
    expansion before its ReLU), (B, rows, W, hidden), and the depthwise weight's and bias's gradients
    from these rows; the chunk's expansion in ``buffer`` (see :func:`_expansion_rows`)."""
    w2 = channels_last_depthwise(dw_weight)
    hidden = w2.shape[0]
    first = 2 * r0 - 1
    e = _expanded_rows(x_map, expand_weight, expand_bias, first, 2 * r1 - 1, buffer)
    p = _dwconv(e, w2, dw_bias, first)
    gp = torch.ops.aten.threshold_backward(g_map[:, r0:r1].permute(0, 3, 1, 2), p, 0)
    de, dw, db = torch.ops.aten.convolution_backward(
        gp, e.permute(0, 3, 1, 2), w2, [hidden], [2, 2], [int(first < 0), 1], [1, 1], False, [0, 0], hidden,
        [True, True, True])
    return torch.ops.aten.threshold_backward(de.permute(0, 2, 3, 1), e, 0), dw, db


def _compiled_forward_rows(x_map, expand_weight, expand_bias, dw_weight, dw_bias, r0: int, r1: int,
                           buffer: torch.Tensor | None = None):
    """:func:`_forward_rows` by the compiled CPU kernel: the expansion's ReLU, the convolution and its
    ReLU in one pass over the chunk (:mod:`.cpu_kernels`)."""
    first = 2 * r0 - 1
    a = _expansion_rows(x_map, expand_weight, expand_bias, first, 2 * r1 - 1, buffer)
    return torch.ops.mmmila_cpu.dwconv_s2_relu(a, dw_weight, dw_bias, first < 0)


def _compiled_backward_rows(g_map, x_map, expand_weight, expand_bias, dw_weight, dw_bias, r0: int, r1: int,
                            buffer: torch.Tensor | None = None):
    """:func:`_backward_rows` by the compiled CPU kernel (both ReLUs' gradients inside its passes; dL/da
    written over the expansion, in ``buffer`` when given)."""
    first = 2 * r0 - 1
    a = _expansion_rows(x_map, expand_weight, expand_bias, first, 2 * r1 - 1, buffer)
    dw, db = torch.ops.mmmila_cpu.dwconv_s2_relu_backward_(g_map[:, r0:r1].contiguous(), a, dw_weight, dw_bias,
                                                           first < 0)
    return a, dw, db


class RowKernels(NamedTuple):
    """What computes a chunk of output rows: forward (B, rows, W/2, hidden) and backward (dL/da, the
    depthwise weight's and bias's gradients), as :func:`_forward_rows` / :func:`_backward_rows`; both
    take the call's expansion buffer (:func:`_chunk_buffer`) last."""
    forward: Callable
    backward: Callable


PYTORCH_ROWS = RowKernels(_forward_rows, _backward_rows)
COMPILED_ROWS = RowKernels(_compiled_forward_rows, _compiled_backward_rows)


def _chunk_buffer(x: torch.Tensor, rows: int, H: int, W: int, hidden: int) -> torch.Tensor | None:
    """One flat buffer for the expansion of a chunk of ``rows`` output rows (2 rows + 1 input rows),
    reused by every chunk of a call: one allocation per call, not per chunk (a fresh tensor of this
    size is fresh pages, a page fault per 4 KiB). None when one chunk holds the map."""
    if 2 * rows >= H:
        return None
    return x.new_empty(x.shape[0] * (2 * rows + 1) * W * hidden)


def expand_dwconv_forward(x: torch.Tensor, expand_weight: torch.Tensor, expand_bias: torch.Tensor,
                          dw_weight: torch.Tensor, dw_bias: torch.Tensor, hw: tuple[int, int],
                          kernels: RowKernels = PYTORCH_ROWS) -> torch.Tensor:
    """The op's output by chunks of output rows (checked inputs): (B, H/2 W/2, hidden) tokens, a
    contiguous tensor (the chunk's own output when one chunk holds the map)."""
    B, _, C = x.shape
    H, W = hw
    hidden = expand_weight.shape[0]
    Ho, Wo = H // 2, W // 2
    if B * Ho * Wo * hidden == 0:
        return torch.zeros((B, Ho * Wo, hidden), dtype=x.dtype, device=x.device)
    x_map = x.view(B, H, W, C)
    rows = _chunk_rows(B, W, hidden, Ho, x.device)
    if rows >= Ho:
        return kernels.forward(x_map, expand_weight, expand_bias, dw_weight, dw_bias, 0, Ho).reshape(
            B, Ho * Wo, hidden)
    out = torch.empty((B, Ho * Wo, hidden), dtype=x.dtype, device=x.device)
    out_map = out.view(B, Ho, Wo, hidden)
    buffer = _chunk_buffer(x, rows, H, W, hidden)
    for r0 in range(0, Ho, rows):
        r1 = min(r0 + rows, Ho)
        out_map[:, r0:r1] = kernels.forward(x_map, expand_weight, expand_bias, dw_weight, dw_bias, r0, r1,
                                            buffer)
    return out


def expand_dwconv_backward(grad: torch.Tensor, x: torch.Tensor, expand_weight: torch.Tensor,
                           expand_bias: torch.Tensor, dw_weight: torch.Tensor, dw_bias: torch.Tensor,
                           hw: tuple[int, int], kernels: RowKernels = PYTORCH_ROWS):
    """(dx, d expand_weight, d expand_bias, d dw_weight, d dw_bias) by chunks (see the module doc)."""
    B, _, C = x.shape
    H, W = hw
    hidden = expand_weight.shape[0]
    Ho, Wo = H // 2, W // 2

    def grads(dx, dw1, db1, dw2, db2):
        # the depthwise weight's gradient with the parameter's own strides (a view recomputes them)
        return (dx, dw1.to(expand_weight.dtype), db1.to(expand_bias.dtype),
                dw2.reshape(hidden, 9).view(dw_weight.shape).to(dw_weight.dtype), db2.to(dw_bias.dtype))

    if B * Ho * Wo * hidden == 0:
        return grads(torch.zeros_like(x), torch.zeros_like(expand_weight), torch.zeros_like(expand_bias),
                     torch.zeros_like(dw_weight), torch.zeros_like(dw_bias))
    x_map, g_map = x.view(B, H, W, C), grad.reshape(B, Ho, Wo, hidden)
    rows = _chunk_rows(B, W, hidden, Ho, x.device)
    if rows >= Ho:   # one chunk: each gradient in one call
        da, dw2, db2 = kernels.backward(g_map, x_map, expand_weight, expand_bias, dw_weight, dw_bias, 0, Ho)
        da = da.reshape(-1, hidden)
        return grads(da.mm(expand_weight).view(x.shape), da.t().mm(x.reshape(-1, C)), da.sum(0), dw2, db2)
    acc = torch.promote_types(x.dtype, torch.float32)
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    dw1 = torch.zeros(expand_weight.shape, dtype=acc, device=x.device)
    db1 = torch.zeros(expand_bias.shape, dtype=acc, device=x.device)
    dw2 = torch.zeros((hidden, 1, 3, 3), dtype=acc, device=x.device)
    db2 = torch.zeros(dw_bias.shape, dtype=acc, device=x.device)
    dx_map = dx.view(B, H, W, C)
    buffer = _chunk_buffer(x, rows, H, W, hidden)
    carry = None   # dL/da of the last input row of the previous chunk (shared with this one)
    for r0 in range(0, Ho, rows):
        r1 = min(r0 + rows, Ho)
        da, dw, db = kernels.backward(g_map, x_map, expand_weight, expand_bias, dw_weight, dw_bias, r0, r1,
                                      buffer)
        dw2 += dw.reshape(dw2.shape)
        db2 += db
        if carry is not None:
            da[:, 0] += carry
        if r1 < Ho:   # the last row is finished by the next chunk (da may be the buffer: copy it out)
            carry = da[:, -1].clone()
            da = da[:, :-1]
        lo, n = max(2 * r0 - 1, 0), da.shape[1]
        da = da.reshape(-1, hidden)
        rows_dx = dx_map[:, lo:lo + n]
        if rows_dx.is_contiguous() and da.dtype == dx.dtype:   # straight into dx (one image)
            torch.mm(da, expand_weight, out=rows_dx.view(-1, C))
        else:
            rows_dx.copy_(da.mm(expand_weight).view(B, n, W, C))
        dw1 += da.t().mm(x_map[:, lo:lo + n].reshape(-1, C))
        db1 += da.sum(0)
    return grads(dx, dw1, db1, dw2, db2)


# ---- the registered op ---------------------------------------------------------------------------
@define_op('mmmila::expand_dwconv')
def expand_dwconv_op(x: torch.Tensor, expand_weight: torch.Tensor, expand_bias: torch.Tensor,
                     dw_weight: torch.Tensor, dw_bias: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The Downsample's expansion by chunks; inputs are checked by the caller."""
    return expand_dwconv_forward(x, expand_weight, expand_bias, dw_weight, dw_bias, (height, width))


@define_op('mmmila::expand_dwconv_backward')
def expand_dwconv_backward_op(grad: torch.Tensor, x: torch.Tensor, expand_weight: torch.Tensor,
                              expand_bias: torch.Tensor, dw_weight: torch.Tensor, dw_bias: torch.Tensor,
                              height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                torch.Tensor, torch.Tensor]:
    """(dx, d expand_weight, d expand_bias, d dw_weight, d dw_bias) of :func:`expand_dwconv_op`."""
    return expand_dwconv_backward(grad, x, expand_weight, expand_bias, dw_weight, dw_bias, (height, width))


def expand_dwconv_fake(x, expand_weight, expand_bias, dw_weight, dw_bias, height, width):
    """Empty output (allocation only, sizes stay symbolic)."""
    return x.new_empty((x.shape[0], (height // 2) * (width // 2), expand_weight.shape[0]))


def expand_dwconv_backward_fake(grad, x, expand_weight, expand_bias, dw_weight, dw_bias, height, width):
    """Empty gradients in the inputs' shapes and dtypes."""
    return (x.new_empty(x.shape), expand_weight.new_empty(expand_weight.shape),
            expand_bias.new_empty(expand_bias.shape), dw_weight.new_empty(dw_weight.shape),
            dw_bias.new_empty(dw_bias.shape))


def _setup_context(ctx, inputs, output):
    x, expand_weight, expand_bias, dw_weight, dw_bias, height, width = inputs
    ctx.save_for_backward(x, expand_weight, expand_bias, dw_weight, dw_bias)
    ctx.hw = (height, width)


def _backward(ctx, grad):
    grads = expand_dwconv_backward_op(grad.contiguous(), *ctx.saved_tensors, *ctx.hw)
    return (*grads, None, None)


torch.library.register_fake(expand_dwconv_op, expand_dwconv_fake)
torch.library.register_fake(expand_dwconv_backward_op, expand_dwconv_backward_fake)
register_autograd(expand_dwconv_op, _backward, _setup_context)
mark_backward_op(expand_dwconv_backward_op)
# F.linear and F.conv2d need one dtype: the activations and every parameter in the autocast dtype
register_autocast_rule('expand_dwconv', cast=(0, 1, 2, 3, 4))
register_autocast_rule('expand_dwconv_backward', cast=())


if cpu_kernels.AVAILABLE:   # on CPU, float32 and float64 chunks by the compiled kernel (:mod:`.cpu_kernels`)
    @define_device_impl(expand_dwconv_op, 'CPU')
    def expand_dwconv_cpu(x, expand_weight, expand_bias, dw_weight, dw_bias, height, width):
        """The op on CPU tensors: the compiled kernel for float32 and float64, else the PyTorch one."""
        kernels = COMPILED_ROWS if cpu_kernels.runs(x) else PYTORCH_ROWS
        return expand_dwconv_forward(x, expand_weight, expand_bias, dw_weight, dw_bias, (height, width),
                                     kernels)

    @define_device_impl(expand_dwconv_backward_op, 'CPU')
    def expand_dwconv_backward_cpu(grad, x, expand_weight, expand_bias, dw_weight, dw_bias, height, width):
        """The op's backward on CPU tensors, as :func:`expand_dwconv_cpu` chooses."""
        kernels = COMPILED_ROWS if cpu_kernels.runs(x) else PYTORCH_ROWS
        return expand_dwconv_backward(grad, x, expand_weight, expand_bias, dw_weight, dw_bias,
                                      (height, width), kernels)
