"""MILA's depthwise 3x3 convolution on tokens, with what follows it, as one registered op.

Four times per block a depthwise 3x3 convolution reads the tokens (B, N, C) as an (H, W) map and
its result is combined with something at once: the conditional positional encodings add their
input (``x + dwc(x)``), the ``dwc`` branch applies SiLU, and LePE adds the attention's output and is
multiplied by the gate ``silu(act_proj(n))`` before ``out_proj``. Each is one memory-bound chain,
one op::

    p   = dwconv3x3(x, weight) + bias
    a   = silu(p) if act == 'silu' else p
    s   = a + (x if skip) + (residual if given)
    out = s * silu(gate) if gate is given else s

``torch.ops.mmmila.dwconv_tokens(x, weight, bias, H, W, residual, gate, skip, act)`` has the
PyTorch implementation on every device (the convolution reads a channels-last view of the tokens,
oneDNN's fast layout on CPU, without a transposed copy). On CPU, when mmmila's compiled kernels are
built (:mod:`.cpu_kernels`), float32 and float64 calls run one compiled pass instead, and the
backward three: the same maths without oneDNN's fixed cost per call. The Triton implementation registers
``torch.ops.mmmila.dwconv_tokens_triton`` with the same schema when ``mmmila.kernels`` is imported.
Both share the fake implementations, the autograd wiring and the form of the autocast rule below:

- autograd saves x, weight, bias, residual and gate, and recomputes ``p`` and ``s`` in backward,
  so nothing of the chain but its output is kept (``torch.ops.mmmila.dwconv_tokens_backward``);
- under autocast the activations (x, residual, gate) run in the autocast dtype. The Triton kernels
  read weight and bias as they are (float32): nothing is cast, and their gradients are float32. The
  PyTorch implementation's convolution needs them in the activations' dtype: its rule casts them on
  the way in, once per forward (autograd saves the casts for backward and casts their gradients
  back).

:func:`dwconv_tokens_ref` is the same maths in plain ops: the decomposition used while torch.jit
traces and the TorchScript ONNX exporter runs (:mod:`mmmila.ops.dispatch`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import cpu_kernels
from .autocast import register_autocast_rule
from .registration import define_device_impl, define_op, mark_backward_op, register_autograd
from .layout import as_map, as_tokens, channels_last_depthwise, check_token_map

ACTS = ('none', 'silu')


def check_dwconv_inputs(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                        hw: tuple[int, int], residual: torch.Tensor | None = None,
                        gate: torch.Tensor | None = None, act: str = 'none') -> None:
    """Raise a ValueError naming the first thing wrong with the inputs of :func:`dwconv_tokens`."""
    B, N, C = check_token_map(x, hw)
    if weight.shape != (C, 1, 3, 3):
        raise ValueError(f'weight must be a depthwise 3x3 conv weight (C, 1, 3, 3) = {(C, 1, 3, 3)}, '
                         f'got {tuple(weight.shape)}')
    if bias is None or bias.shape != (C,):
        raise ValueError(f'bias must be (C,) = ({C},), got {None if bias is None else tuple(bias.shape)}')
    for name, t in (('residual', residual), ('gate', gate)):
        if t is not None and (t.shape != x.shape or t.dtype != x.dtype):
            raise ValueError(f'{name} must have the shape and dtype of x {tuple(x.shape)} {x.dtype}, got '
                             f'{tuple(t.shape)} {t.dtype}')
    for name, t in (('weight', weight), ('bias', bias), ('residual', residual), ('gate', gate)):
        if t is not None and t.device != x.device:
            raise ValueError(f'{name} is on {t.device} but x is on {x.device}')
    if act not in ACTS:
        raise ValueError(f'act must be one of {ACTS}, got {act!r}')


def dwconv_tokens_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, hw: tuple[int, int],
                      residual: torch.Tensor | None = None, gate: torch.Tensor | None = None,
                      skip: bool = False, act: str = 'none') -> torch.Tensor:
    """The op's maths in plain autograd ops (see the module doc); weight and bias are cast to x's dtype."""
    C = x.shape[-1]
    y = F.conv2d(as_map(x, hw), weight.to(x.dtype), bias.to(x.dtype), padding=1, groups=C)
    if act == 'silu':
        y = F.silu(y)
    y = as_tokens(y)
    if skip:
        y = y + x
    if residual is not None:
        y = y + residual
    return y if gate is None else y * F.silu(gate)


# ---- the PyTorch implementation ------------------------------------------------------------------
def _conv_params(weight: torch.Tensor, bias: torch.Tensor, dtype: torch.dtype):
    """Weight and bias in the activations' dtype, the weight as :func:`channels_last_depthwise`."""
    return channels_last_depthwise(weight.to(dtype)), bias.to(dtype)


def _pre_activation(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                    hw: tuple[int, int]) -> torch.Tensor:
    """p = dwconv3x3(x) + b as a channels-last (B, C, H, W) map, a fresh tensor; ``w``, ``b`` from
    :func:`_conv_params`."""
    return F.conv2d(as_map(x, hw), w, b, padding=1, groups=x.shape[-1])


def _sum_before_gate(p: torch.Tensor, x: torch.Tensor, hw: tuple[int, int], residual, skip: bool,
                     act: str) -> torch.Tensor:
    """s = act(p) + (x) + (residual), in place into the fresh map ``p``."""
    s = F.silu(p, inplace=True) if act == 'silu' else p
    if skip:
        s.add_(as_map(x, hw))
    if residual is not None:
        s.add_(as_map(residual, hw))
    return s


def dwconv_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, hw: tuple[int, int],
                   residual: torch.Tensor | None, gate: torch.Tensor | None, skip: bool,
                   act: str) -> torch.Tensor:
    """The op's output by PyTorch ops (checked inputs); contiguous tokens in x's dtype."""
    if x.numel() == 0:
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)
    s = _sum_before_gate(_pre_activation(x, *_conv_params(weight, bias, x.dtype), hw), x, hw, residual,
                         skip, act)
    if gate is not None:
        s.mul_(F.silu(as_map(gate, hw)))
    return as_tokens(s)


def dwconv_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                    hw: tuple[int, int], residual: torch.Tensor | None, gate: torch.Tensor | None,
                    skip: bool, act: str):
    """(dx, dweight, dbias, dresidual, dgate) by PyTorch ops; dresidual and dgate are empty when
    there is no gate or no residual (the residual's gradient is then ``grad`` itself)."""
    C = x.shape[-1]
    if x.numel() == 0:
        return (torch.zeros_like(x), torch.zeros_like(weight), torch.zeros_like(bias),
                torch.zeros_like(x) if residual is not None and gate is not None else x.new_empty(0),
                torch.zeros_like(x) if gate is not None else x.new_empty(0))
    g = as_map(grad, hw)
    w, b = _conv_params(weight, bias, x.dtype)   # once: the recomputation and the backward share it
    p = _pre_activation(x, w, b, hw) if act == 'silu' or gate is not None else None
    dres, dgate = x.new_empty(0), x.new_empty(0)   # two tensors: outputs may not alias each other
    if gate is not None:
        gate_map = as_map(gate, hw)
        pre = p.clone() if act == 'silu' else p   # silu's backward needs p itself
        s = _sum_before_gate(pre, x, hw, residual, skip, act)
        dgate = as_tokens(torch.ops.aten.silu_backward(g * s, gate_map))
        g = g * F.silu(gate_map)
        if residual is not None:
            dres = as_tokens(g)
    gp = torch.ops.aten.silu_backward(g, p) if act == 'silu' else g
    dx, dw, db = torch.ops.aten.convolution_backward(
        gp, as_map(x, hw), w, [C], [1, 1], [1, 1], [1, 1], False, [0, 0], C, [True, True, True])
    if skip:
        dx.add_(g)
    # dweight with the parameter's own strides (a view recomputes them) and dtype
    dw = dw.reshape(C, 9).view(weight.shape).to(weight.dtype)
    return as_tokens(dx), dw, db.to(bias.dtype), dres, dgate


# ---- the registered op ---------------------------------------------------------------------------
def dwconv_fake(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, height: int, width: int,
                residual, gate, skip: bool, act: str) -> torch.Tensor:
    """Empty output: contiguous tokens in x's dtype (allocation only, sizes stay symbolic)."""
    return x.new_empty(x.shape)


def dwconv_backward_fake(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                         height: int, width: int, residual, gate, skip: bool, act: str):
    """Empty (dx, dweight, dbias, dresidual, dgate) as the real implementations return them."""
    with_gate = gate is not None
    return (x.new_empty(x.shape), weight.new_empty(weight.shape), bias.new_empty(bias.shape),
            x.new_empty(x.shape if with_gate and residual is not None else (0,)),
            x.new_empty(x.shape if with_gate else (0,)))


def register_dwconv_op(op, backward_op, name: str, cast_params: bool) -> None:
    """The wiring every implementation of the op shares: fake implementations, autograd and the
    autocast rule, for ``op`` (``torch.ops.mmmila.<name>``) and its ``backward_op``
    (``torch.ops.mmmila.<name>_backward``, called as ``backward_op(grad, x, weight, bias, H, W,
    residual, gate, skip, act)``). Fakes allocate only, so sizes stay symbolic under tracing.
    Under autocast the activations are cast to its dtype, and weight and bias too if ``cast_params``
    (an implementation that cannot read them in float32)."""
    torch.library.register_fake(op, dwconv_fake)
    torch.library.register_fake(backward_op, dwconv_backward_fake)
    _register_autograd(op, backward_op)
    mark_backward_op(backward_op)
    register_autocast_rule(name, cast=(0, 1, 2, 5, 6) if cast_params else (0, 5, 6))
    register_autocast_rule(f'{name}_backward', cast=())


def _register_autograd(op, backward_op) -> None:
    """Autograd of a dwconv_tokens op: saves the tensor inputs and recomputes the rest."""
    def setup_context(ctx, inputs, output):
        x, weight, bias, height, width, residual, gate, skip, act = inputs
        ctx.save_for_backward(x, weight, bias, residual, gate)
        ctx.args = (height, width, skip, act)

    def backward(ctx, grad):
        x, weight, bias, residual, gate = ctx.saved_tensors
        height, width, skip, act = ctx.args
        dx, dw, db, dres, dgate = backward_op(grad.contiguous(), x, weight, bias, height, width,
                                              residual, gate, skip, act)
        needs = ctx.needs_input_grad
        if residual is not None and gate is None:
            dres = grad   # the residual is added last: its gradient is the output's
        return (dx if needs[0] else None, dw if needs[1] else None, db if needs[2] else None,
                None, None, dres if residual is not None and needs[5] else None,
                dgate if gate is not None and needs[6] else None, None, None)

    register_autograd(op, backward, setup_context)


@define_op('mmmila::dwconv_tokens')
def dwconv_tokens_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, height: int, width: int,
                     residual: torch.Tensor | None, gate: torch.Tensor | None, skip: bool,
                     act: str) -> torch.Tensor:
    """The chain of the module doc by PyTorch ops; inputs are checked by the caller."""
    return dwconv_forward(x, weight, bias, (height, width), residual, gate, skip, act)


@define_op('mmmila::dwconv_tokens_backward')
def dwconv_tokens_backward_op(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                              bias: torch.Tensor, height: int, width: int,
                              residual: torch.Tensor | None, gate: torch.Tensor | None, skip: bool,
                              act: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                 torch.Tensor]:
    """(dx, dweight, dbias, dresidual, dgate) of :func:`dwconv_tokens_op`."""
    return dwconv_backward(grad, x, weight, bias, (height, width), residual, gate, skip, act)


register_dwconv_op(dwconv_tokens_op, dwconv_tokens_backward_op, 'dwconv_tokens', cast_params=True)


# ---- the CPU implementation: compiled kernels for float32 and float64 (:mod:`.cpu_kernels`) ---------
def _contiguous(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.contiguous()


if cpu_kernels.AVAILABLE:
    @define_device_impl(dwconv_tokens_op, 'CPU')
    def dwconv_tokens_cpu(x, weight, bias, height, width, residual, gate, skip, act):
        """The op on CPU tensors: the compiled pass, or the PyTorch implementation for other dtypes."""
        if not cpu_kernels.runs(x):
            return dwconv_forward(x, weight, bias, (height, width), residual, gate, skip, act)
        return torch.ops.mmmila_cpu.dwconv_tokens(x.contiguous(), weight, bias, height, width,
                                                  _contiguous(residual), _contiguous(gate), skip,
                                                  act == 'silu')

    @define_device_impl(dwconv_tokens_backward_op, 'CPU')
    def dwconv_tokens_backward_cpu(grad, x, weight, bias, height, width, residual, gate, skip, act):
        """The op's backward on CPU tensors, as :func:`dwconv_tokens_cpu` chooses."""
        if not cpu_kernels.runs(x):
            return dwconv_backward(grad, x, weight, bias, (height, width), residual, gate, skip, act)
        return torch.ops.mmmila_cpu.dwconv_tokens_backward(
            grad.contiguous(), x.contiguous(), weight, bias, height, width, _contiguous(residual),
            _contiguous(gate), skip, act == 'silu')
