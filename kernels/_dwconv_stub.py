"""TEMPORARY stand-in for mmmila.ops.dwconv (the lead's module) until it is on main."""
from __future__ import annotations

import torch


def dwconv_fake(x, weight, bias, height, width, residual, gate, skip, act):
    return x.new_empty(x.shape)


def dwconv_backward_fake(grad, x, weight, bias, height, width, residual, gate, skip, act):
    empty = x.new_empty(0)
    return (x.new_empty(x.shape), weight.new_empty(weight.shape), bias.new_empty(bias.shape),
            x.new_empty(x.shape) if residual is not None and gate is not None else empty,
            x.new_empty(x.shape) if gate is not None else empty)


def register_dwconv_autograd(op, backward_op) -> None:
    def setup_context(ctx, inputs, output):
        x, weight, bias, height, width, residual, gate, skip, act = inputs
        ctx.save_for_backward(x, weight, bias, residual, gate)
        ctx.args = (height, width, skip, act)

    def backward(ctx, grad):
        x, weight, bias, residual, gate = ctx.saved_tensors
        height, width, skip, act = ctx.args
        dx, dw, db, dres, dgate = backward_op(grad, x, weight, bias, height, width, residual, gate,
                                              skip, act)
        if residual is not None and gate is None:
            dres = grad
        return (dx, dw, db, None, None, dres if residual is not None else None,
                dgate if gate is not None else None, None, None)

    op.register_autograd(backward, setup_context=setup_context)
