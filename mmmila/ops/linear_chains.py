"""The block's two matrix-product chains as registered ops that keep less for backward.

- ``torch.ops.mmmila.norm_linears(x, norm_weight, norm_bias, eps, weights, biases) -> outs``:
  LayerNorm over the last dim, then one linear layer per (weight, bias) reading its output
  (``norm1`` with ``act_proj`` and ``in_proj``; ``norm2`` with ``fc1``). Autograd keeps ``x``, not
  the norm's output: the backward recomputes it (bit for bit, with its statistics).
- ``torch.ops.mmmila.gelu_linear(h, weight, bias) -> out``: exact GELU, then a linear layer (the
  MLP's ``fc2``). Autograd keeps ``h``, not GELU's output (the MLP's hidden width, 4C per token):
  the backward recomputes it.

Each saves one activation of its width per call and costs one more elementwise pass in backward;
for MILA-T that is 6C floats per token and block (about a fifth of what a block keeps).

Under autocast both run in the autocast dtype. In the PyTorch implementations the activations and
the linear layers' weights are cast once, on the way in (recorded by autograd, whose backward casts
the weights' gradients back), and the backward reuses the saved casts. A bias stays float32: the op
casts it for the matrix product's epilogue and sums its gradient straight into float32 (one
reduction, no cast back). The LayerNorm reads the activations in the autocast dtype with its own
float32 weight and bias and accumulates in float32 (no float32 copy of ``x``, no cast of its
output): the LayerNorm itself costs no cast.

``torch.ops.mmmila.norm_linears`` and ``gelu_linear`` are the PyTorch implementations (plain aten
calls, any device). The Triton implementations, ``torch.ops.mmmila.norm_linears_triton`` and
``gelu_linear_triton`` (``mmmila/kernels/linear_chains.py``), fuse the norm or GELU into the matrix
products: one launch forward and two backward, with the bias gradients reduced inside the weight
gradient's launch. They read float32 weights and biases as they are, so under autocast only the
activations are cast. Both share the fakes, the autograd wiring and the form of the autocast rule
(:func:`register_norm_linears_op`, :func:`register_gelu_linear_op`). The backend is chosen as for
the attention (:func:`mmmila.ops.dispatch.run_norm_linears`).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from . import cpu_kernels
from .autocast import register_autocast_rule
from .chunks import rows_per_chunk
from .registration import define_device_impl, define_op, mark_backward_op, register_autograd


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1])


# ---- LayerNorm, then linear layers ---------------------------------------------------------------
@define_op('mmmila::norm_linears')
def norm_linears_op(x: torch.Tensor, norm_weight: torch.Tensor, norm_bias: torch.Tensor, eps: float,
                    weights: list[torch.Tensor], biases: list[torch.Tensor]) -> list[torch.Tensor]:
    """``[linear(layer_norm(x), w, b) for w, b]``; x (..., C), weights (C_out, C)."""
    n = F.layer_norm(x, (x.shape[-1],), norm_weight, norm_bias, eps)
    return [F.linear(n, w, b.to(w.dtype)) for w, b in zip(weights, biases)]


@define_op('mmmila::norm_linears_backward')
def norm_linears_backward_op(grads: list[torch.Tensor], x: torch.Tensor, norm_weight: torch.Tensor,
                             norm_bias: torch.Tensor, eps: float, weights: list[torch.Tensor],
                             biases: list[torch.Tensor]) -> list[torch.Tensor]:
    """[dx, d norm_weight, d norm_bias, *d weights, *d biases] of :func:`norm_linears_op`."""
    x2 = _rows(x)
    shape = (x.shape[-1],)
    n, mean, rstd = torch.native_layer_norm(x2, shape, norm_weight, norm_bias, eps)
    dws, dbs = [], []
    gn = None
    for grad, w, b in zip(grads, weights, biases):
        g = _rows(grad)
        dws.append(g.t().mm(n))
        dbs.append(g.sum(0, dtype=b.dtype))
        gn = g.mm(w) if gn is None else gn.addmm_(g, w)
    dx, dnw, dnb = torch.ops.aten.native_layer_norm_backward(
        gn, x2, shape, mean, rstd, norm_weight, norm_bias, [True, True, True])
    return [dx.view(x.shape), dnw, dnb] + dws + dbs


def norm_linears_fake(x, norm_weight, norm_bias, eps, weights, biases):
    """Empty outputs of a ``norm_linears`` op (allocation only, sizes stay symbolic)."""
    return [x.new_empty((*x.shape[:-1], w.shape[0])) for w in weights]


def norm_linears_backward_fake(grads, x, norm_weight, norm_bias, eps, weights, biases):
    """Empty [dx, d norm_weight, d norm_bias, *d weights, *d biases] of a ``norm_linears`` op."""
    return ([x.new_empty(x.shape), norm_weight.new_empty(norm_weight.shape),
             norm_bias.new_empty(norm_bias.shape)] + [w.new_empty(w.shape) for w in weights]
            + [b.new_empty(b.shape) for b in biases])


def register_norm_linears_op(op, backward_op, name: str, cast_weights: bool) -> None:
    """The wiring every implementation of ``norm_linears`` shares: fakes, autograd (saves x, the
    parameters; ``backward_op(grads, x, norm_weight, norm_bias, eps, weights, biases)`` recomputes
    the norm) and the autocast rule (x in the autocast dtype, and the linear layers' weights too if
    ``cast_weights``: an implementation that cannot read them in float32)."""
    torch.library.register_fake(op, norm_linears_fake)
    torch.library.register_fake(backward_op, norm_linears_backward_fake)
    mark_backward_op(backward_op)

    def setup_context(ctx, inputs, output):
        x, norm_weight, norm_bias, eps, weights, biases = inputs
        ctx.save_for_backward(x, norm_weight, norm_bias, *weights, *biases)
        ctx.eps = eps
        ctx.num = len(weights)

    def backward(ctx, grads):
        x, norm_weight, norm_bias, *params = ctx.saved_tensors
        weights, biases = params[:ctx.num], params[ctx.num:]
        grads = [g if g is not None else torch.zeros((*x.shape[:-1], w.shape[0]), dtype=x.dtype,
                                                      device=x.device) for g, w in zip(grads, weights)]
        dx, dnw, dnb, *rest = backward_op(grads, x, norm_weight, norm_bias, ctx.eps, list(weights),
                                          list(biases))
        return dx, dnw, dnb, None, rest[:ctx.num], rest[ctx.num:]

    register_autograd(op, backward, setup_context)
    register_autocast_rule(name, cast=(0, 4) if cast_weights else (0,))
    register_autocast_rule(f'{name}_backward', cast=())


register_norm_linears_op(norm_linears_op, norm_linears_backward_op, 'norm_linears', cast_weights=True)


# ---- GELU, then a linear layer -------------------------------------------------------------------
@define_op('mmmila::gelu_linear')
def gelu_linear_op(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``linear(gelu(h), weight, bias)``, exact GELU; h (..., C_in). By chunks of rows (:mod:`.chunks`),
    so that GELU's output, the MLP's hidden width, is never made whole on CPU."""
    h2 = _rows(h)
    b = bias.to(weight.dtype)
    rows = rows_per_chunk(h2.shape[0], h2.shape[1], h.device)
    if rows >= h2.shape[0]:
        return F.linear(F.gelu(h), weight, b)
    out = h2.new_empty((h2.shape[0], weight.shape[0]))
    act = h2.new_empty((rows, h2.shape[1]))   # one chunk's GELU, reused by every chunk
    for i in range(0, h2.shape[0], rows):
        hc = h2[i:i + rows]
        a = torch.ops.aten.gelu.out(hc, out=act[:hc.shape[0]])
        torch.addmm(b, a, weight.t(), out=out[i:i + rows])
    return out.view(*h.shape[:-1], weight.shape[0])


def gelu_linear_backward(grad: torch.Tensor, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                         compiled: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dh, dweight, dbias) of :func:`gelu_linear_op`, by the same chunks; the weight's gradient is
    summed over them in float32 (float64 for float64 inputs). ``compiled``: GELU and its gradient
    in one pass of mmmila's compiled CPU kernel (:mod:`.cpu_kernels`; CPU tensors of one dtype)."""
    h2, g = _rows(h), _rows(grad)
    db = g.sum(0, dtype=bias.dtype)
    rows = rows_per_chunk(h2.shape[0], h2.shape[1], h.device)
    compiled = compiled and h.dtype == weight.dtype == grad.dtype

    def gelu_and_grad(hc, gc, dh_out, a_buffer):
        """gelu(hc), fc2's input, and dL/dh of the chunk written into ``dh_out`` (which takes dL/da
        first: no buffer of its own)."""
        torch.mm(gc, weight, out=dh_out)
        if compiled:
            torch.ops.mmmila_cpu.gelu_grad_(hc, a_buffer, dh_out)
            return a_buffer
        torch.ops.aten.gelu_backward.grad_input(dh_out, hc, grad_input=dh_out)
        return F.gelu(hc)

    dh = torch.empty_like(h2)
    a_buffer = torch.empty((min(rows, h2.shape[0]), h2.shape[1]), dtype=h2.dtype, device=h.device) \
        if compiled else None
    if rows >= h2.shape[0]:
        a = gelu_and_grad(h2, g, dh, a_buffer)
        return dh.view(h.shape), g.t().mm(a), db
    dw = torch.zeros(weight.shape, dtype=torch.promote_types(weight.dtype, torch.float32), device=h.device)
    for i in range(0, h2.shape[0], rows):
        hc, gc = h2[i:i + rows], g[i:i + rows]
        a = gelu_and_grad(hc, gc, dh[i:i + rows], None if a_buffer is None else a_buffer[:hc.shape[0]])
        if dw.dtype == gc.dtype:
            dw.addmm_(gc.t(), a)
        else:
            dw += gc.t().mm(a)
    return dh.view(h.shape), dw.to(weight.dtype), db


@define_op('mmmila::gelu_linear_backward')
def gelu_linear_backward_op(grad: torch.Tensor, h: torch.Tensor, weight: torch.Tensor,
                            bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dh, dweight, dbias) of :func:`gelu_linear_op` (:func:`gelu_linear_backward`)."""
    return gelu_linear_backward(grad, h, weight, bias)


def gelu_linear_fake(h, weight, bias):
    """Empty output of a ``gelu_linear`` op."""
    return h.new_empty((*h.shape[:-1], weight.shape[0]))


def gelu_linear_backward_fake(grad, h, weight, bias):
    """Empty (dh, dweight, dbias) of a ``gelu_linear`` op."""
    return h.new_empty(h.shape), weight.new_empty(weight.shape), bias.new_empty(bias.shape)


def register_gelu_linear_op(op, backward_op, name: str, cast_weights: bool) -> None:
    """As :func:`register_norm_linears_op`, for ``gelu_linear``: autograd saves h, weight and bias
    and calls ``backward_op(grad, h, weight, bias)``."""
    torch.library.register_fake(op, gelu_linear_fake)
    torch.library.register_fake(backward_op, gelu_linear_backward_fake)
    mark_backward_op(backward_op)

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def backward(ctx, grad):
        h, weight, bias = ctx.saved_tensors
        return backward_op(grad, h, weight, bias)

    register_autograd(op, backward, setup_context)
    register_autocast_rule(name, cast=(0, 1) if cast_weights else (0,))
    register_autocast_rule(f'{name}_backward', cast=())


# activations and the linear layers' weights in the autocast dtype; the biases and the LayerNorm's
# own parameters stay float32 (a bias is cast inside, its gradient summed straight into float32)
register_gelu_linear_op(gelu_linear_op, gelu_linear_backward_op, 'gelu_linear', cast_weights=True)

if cpu_kernels.AVAILABLE:   # on CPU, GELU's gradient by the compiled kernel (:mod:`.cpu_kernels`)
    @define_device_impl(gelu_linear_backward_op, 'CPU')
    def gelu_linear_backward_on_cpu(grad, h, weight, bias):
        """:func:`gelu_linear_backward_op` on CPU tensors, GELU and its gradient by the compiled kernel
        for float32 and float64."""
        return gelu_linear_backward(grad, h, weight, bias, compiled=cpu_kernels.runs(h))


# ---- the callers' functions ----------------------------------------------------------------------
def check_linear_chain(x: torch.Tensor, linears: Sequence) -> None:
    """Raise a ValueError naming the first linear layer that cannot read ``x`` (..., C)."""
    features = x.shape[-1]
    for i, lin in enumerate(linears):
        weight, bias = lin.weight, lin.bias   # each a module attribute lookup: read once (every call)
        if weight.dim() != 2 or weight.shape[1] != features or bias is None:
            raise ValueError(f'linear layer {i} must take {features} input features and have a bias, '
                             f'got weight {tuple(weight.shape)}, bias {bias is not None}')


def check_norm_linears(x: torch.Tensor, norm, linears: Sequence) -> None:
    """Raise a ValueError naming what keeps ``norm`` and ``linears`` from reading ``x`` (..., C)."""
    if tuple(norm.normalized_shape) != (x.shape[-1],) or norm.weight is None or norm.bias is None:
        raise ValueError(f'norm_linears needs an affine LayerNorm over the last dim ({x.shape[-1]}), '
                         f'got normalized_shape {tuple(norm.normalized_shape)}')
    check_linear_chain(x, linears)


def norm_linears_ref(x: torch.Tensor, norm, linears: Sequence) -> tuple[torch.Tensor, ...]:
    """The maths of ``norm_linears`` in plain ops: its decomposition while torch.jit traces or the
    TorchScript ONNX exporter runs."""
    n = F.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, norm.eps)
    return tuple(F.linear(n, lin.weight, lin.bias) for lin in linears)


def gelu_linear_ref(h: torch.Tensor, linear) -> torch.Tensor:
    """The maths of ``gelu_linear`` in plain ops (exact GELU)."""
    return F.linear(F.gelu(h), linear.weight, linear.bias)
