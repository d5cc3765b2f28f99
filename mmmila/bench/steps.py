"""The calls that benchmarks, the GPU kit and the tests measure: a model's forward or training step,
and the attention op's output with its input gradients."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable

import torch
import torch.nn as nn

MODES = ('forward', 'forward+backward', 'train step')


def output_tensors(out) -> list[torch.Tensor]:
    """The tensors of a model's output (a tensor, or nested lists, tuples and dicts of them)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in output_tensors(o)]
    return []


def _loss(out) -> torch.Tensor:
    """The sum of the means of every floating-point output (in float32): every output gets a gradient."""
    return sum(o.float().mean() for o in output_tensors(out) if o.is_floating_point())


def model_step(model: nn.Module, x: torch.Tensor, mode: str, optimizer: torch.optim.Optimizer | None = None,
               autocast: torch.dtype | None = None,
               no_grad: Callable = torch.inference_mode) -> Callable[[], None]:
    """One measured call of ``model`` on ``x``; sets the model's train / eval mode for it.

    Modes:

    - ``'forward'``: eval mode, the forward under ``no_grad`` (default ``torch.inference_mode``;
      ``torch.no_grad`` for models that torch.compile traces).
    - ``'forward+backward'``: train mode; the gradients are set to None, then the forward and the
      backward of the sum of every output's mean. The gradients stay until the next call (so a
      peak memory above the start of a later call does not count them twice).
    - ``'train step'``: train mode; as ``'forward+backward'``, then ``optimizer.step()`` and
      ``optimizer.zero_grad(set_to_none=True)``: one iteration of a training loop (the gradients
      are made and freed inside the call).

    ``autocast``: run the forward under ``torch.autocast`` to this dtype (the loss and the backward
    outside it, as in mixed-precision training).
    """
    if mode not in MODES:
        raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
    if mode == 'train step' and optimizer is None:
        raise ValueError("mode 'train step' needs an optimizer")
    model.train(mode != 'forward')

    def amp():
        return torch.autocast(x.device.type, dtype=autocast) if autocast is not None else nullcontext()

    if mode == 'forward':
        def forward():
            with no_grad(), amp():
                model(x)
        return forward

    def backward():
        model.zero_grad(set_to_none=True)
        with amp():
            out = model(x)
        _loss(out).backward()
        if mode == 'train step':
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return backward


def outputs_and_grads(fn: Callable, qk: torch.Tensor, v: torch.Tensor, g: torch.Tensor, *args,
                      before: Callable[[], None] | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``fn(qk, v, *args)`` on fresh leaf copies of ``qk`` and ``v``, then ``backward(g)``.

    Returns (out, dqk, dv), detached. ``before()`` runs once the leaves exist, right before the
    call (the GPU kit fills the allocator's free blocks with NaN there).
    """
    qk = qk.detach().clone().requires_grad_()
    v = v.detach().clone().requires_grad_()
    if before is not None:
        before()
    out = fn(qk, v, *args)
    out.backward(g)
    return out.detach(), qk.grad, v.grad
