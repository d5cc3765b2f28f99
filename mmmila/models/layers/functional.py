"""Memory-lean building blocks of the MILA block: an activation followed by a linear layer.

Under autograd, ``F.linear(gelu(h), W, b)`` keeps both ``h`` (for GELU's backward) and ``gelu(h)``
(for the weight gradient): two tensors of the MLP's hidden width, 8C per token, the largest part of
what a block saves for backward. :func:`gelu_linear` saves ``h`` alone and recomputes ``gelu(h)``
in backward (one more elementwise pass); :func:`gated_linear`, ``F.linear(y * silu(a), W, b)``,
saves ``y`` and ``a`` instead of ``a``, ``silu(a)``, ``y`` and the product; :func:`norm_linears`,
LayerNorm followed by one or more linear layers reading its output, saves the norm's input, not its
output (recomputed in backward). The recomputation costs less than it saves on CPU, where every
large fresh tensor also costs page faults.

Without autograd (inference, ``torch.no_grad``) they run the plain ops, in place on the
activation's input when the caller says it may be overwritten (``inplace=True``). While
``torch.jit`` traces (FLOP counters) and under autocast they run the plain ops (the tracer must see
them; the Functions keep one dtype from forward to backward).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


def _needs_autograd(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _plain(x: torch.Tensor) -> bool:
    """Run the plain ops: while torch.jit traces (FLOP counters must see them), and under
    autocast (the Functions below keep one dtype from forward to backward)."""
    return torch.jit.is_tracing() or torch.is_autocast_enabled(x.device.type)


def _weight_grads(grad: torch.Tensor, inp: torch.Tensor, needs_w: bool, needs_b: bool):
    """Gradients of ``F.linear(inp, W, b)`` for W and b from the output gradient (tokens, out)."""
    gw = grad.t().mm(inp) if needs_w else None
    gb = grad.sum(0) if needs_b else None
    return gw, gb


class _GeluLinear(torch.autograd.Function):
    """``F.linear(gelu(h), weight, bias)`` for 2-D ``h`` (tokens, C), saving only ``h`` (exact GELU)."""

    @staticmethod
    def forward(ctx, h, weight, bias):
        ctx.save_for_backward(h, weight)
        ctx.has_bias = bias is not None
        return F.linear(F.gelu(h), weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        h, weight = ctx.saved_tensors
        needs_h, needs_w, needs_b = ctx.needs_input_grad
        gw, gb = _weight_grads(grad, F.gelu(h), needs_w, needs_b and ctx.has_bias)
        gh = torch.ops.aten.gelu_backward(grad.matmul(weight), h) if needs_h else None
        return gh, gw, gb


class _GatedLinear(torch.autograd.Function):
    """``F.linear(y * silu(a), weight, bias)`` for 2-D ``y``, ``a`` (tokens, C), saving only them."""

    @staticmethod
    def forward(ctx, y, a, weight, bias):
        ctx.save_for_backward(y, a, weight)
        ctx.has_bias = bias is not None
        return F.linear(F.silu(a).mul_(y), weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        y, a, weight = ctx.saved_tensors
        needs_y, needs_a, needs_w, needs_b = ctx.needs_input_grad
        gate = F.silu(a)
        gw = gb = None
        if needs_w or needs_b:
            gw, gb = _weight_grads(grad, gate * y, needs_w, needs_b and ctx.has_bias)
        gy = ga = None
        if needs_y or needs_a:
            gh = grad.matmul(weight)
            if needs_a:
                ga = torch.ops.aten.silu_backward(gh * y, a)
            if needs_y:
                gy = gh.mul_(gate)
        return gy, ga, gw, gb


class _NormLinears(torch.autograd.Function):
    """``[F.linear(layer_norm(x), W_i, b_i) for i]`` for 2-D ``x``, saving ``x``, not the norm's output."""

    @staticmethod
    def forward(ctx, x, eps, norm_weight, norm_bias, *params):
        n = F.layer_norm(x, (x.shape[-1],), norm_weight, norm_bias, eps)
        ctx.eps = eps
        ctx.save_for_backward(x, norm_weight, norm_bias, *params)
        return tuple(F.linear(n, params[i], params[i + 1]) for i in range(0, len(params), 2))

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        x, norm_weight, norm_bias, *params = ctx.saved_tensors
        needs = ctx.needs_input_grad
        # the norm's output and statistics again, bit for bit those of the forward
        n, mean, rstd = torch.native_layer_norm(x, (x.shape[-1],), norm_weight, norm_bias, ctx.eps)
        param_grads = []
        gn = None
        for i, grad in enumerate(grads):
            weight, bias = params[2 * i], params[2 * i + 1]
            gw, gb = _weight_grads(grad, n, needs[4 + 2 * i], bias is not None and needs[5 + 2 * i])
            param_grads += [gw, gb]
            gn = grad.mm(weight) if gn is None else gn.addmm_(grad, weight)
        del n
        gx, gnw, gnb = torch.ops.aten.native_layer_norm_backward(
            gn, x, (x.shape[-1],), mean, rstd, norm_weight, norm_bias,
            [needs[0], norm_weight is not None and needs[2], norm_bias is not None and needs[3]])
        return (gx, None, gnw, gnb, *param_grads)


def norm_linears(x: torch.Tensor, norm: torch.nn.LayerNorm,
                 linears: list[torch.nn.Linear]) -> tuple[torch.Tensor, ...]:
    """``tuple(lin(norm(x)) for lin in linears)`` for tokens (..., C); under autograd the norm's
    output is recomputed in backward from ``x`` instead of being kept."""
    params = [p for lin in linears for p in (lin.weight, lin.bias)]
    if _plain(x) or not _needs_autograd(x, norm.weight, norm.bias, *params):
        n = F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        return tuple(F.linear(n, lin.weight, lin.bias) for lin in linears)
    if norm.normalized_shape != (x.shape[-1],):
        raise ValueError(f'norm_linears needs a LayerNorm over the last dim ({x.shape[-1]}), '
                         f'got normalized_shape {norm.normalized_shape}')
    outs = _NormLinears.apply(x.reshape(-1, x.shape[-1]), norm.eps, norm.weight, norm.bias, *params)
    return tuple(o.view(*x.shape[:-1], o.shape[-1]) for o in outs)


def gelu_linear(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                residual: torch.Tensor | None = None, inplace: bool = False) -> torch.Tensor:
    """``F.linear(F.gelu(h), weight, bias) (+ residual)``; under autograd it saves ``h`` alone
    (see the module doc).

    ``residual`` is added in place into the fresh output. ``inplace``: without autograd, GELU may
    overwrite ``h`` (a fresh intermediate of the caller).
    """
    if _plain(h):
        out = F.linear(F.gelu(h), weight, bias)
        return out if residual is None else out + residual
    h2 = h.reshape(-1, h.shape[-1])
    if _needs_autograd(h, weight, bias):
        out = _GeluLinear.apply(h2, weight, bias)
    else:
        out = F.linear(torch.ops.aten.gelu_(h2) if inplace else F.gelu(h2), weight, bias)
    return _add_residual(out, residual).view(*h.shape[:-1], out.shape[-1])


def _add_residual(out: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
    """``out += residual`` on the 2-D base ``out`` (in place on a base, never on a view of it:
    autograd would replay the view in backward at the cost of a zero-filled copy)."""
    return out if residual is None else out.add_(residual.reshape(out.shape))


def gated_linear(y: torch.Tensor, a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 residual: torch.Tensor | None = None, inplace: bool = False) -> torch.Tensor:
    """``F.linear(y * F.silu(a), weight, bias) (+ residual)``; under autograd it saves ``y`` and
    ``a`` alone.

    ``residual`` is added in place into the fresh output. ``inplace``: without autograd, the gate
    may overwrite ``a`` (a fresh intermediate of the caller).
    """
    if _plain(y):
        out = F.linear(y * F.silu(a), weight, bias)
        return out if residual is None else out + residual
    y2, a2 = y.reshape(-1, y.shape[-1]), a.reshape(-1, a.shape[-1])
    if _needs_autograd(y, a, weight, bias):
        out = _GatedLinear.apply(y2, a2, weight, bias)
    else:
        out = F.linear(F.silu(a2, inplace=inplace).mul_(y2), weight, bias)
    return _add_residual(out, residual).view(*y.shape[:-1], out.shape[-1])
