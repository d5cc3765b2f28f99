"""How far a result is from the truth: the error measures of the tests, the benchmarks and the GPU kit.

Every measure is computed in float64 from the two tensors given (the inputs are not changed), so a
float32 or 16-bit result is judged without adding round-off of its own.

- :func:`rel_err`: max |actual - expected| / max |expected| (the op's and the export's checks).
- :func:`rel_rms`: RMS(actual - expected) / RMS(expected) (the whole backbone's checks).
- :func:`grad_errors`, :func:`whole_grad_error`: :func:`rel_rms` over a model's parameter gradients.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch

_TINY = 1e-30   # the smallest scale divided by: an all-zero truth gives 0 for an exact result


def _pair(actual: torch.Tensor, expected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if tuple(actual.shape) != tuple(expected.shape):
        raise ValueError(f'cannot compare a result of shape {tuple(actual.shape)} with an expected '
                         f'one of shape {tuple(expected.shape)}')
    return actual.detach().double(), expected.detach().double()


def max_abs_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| (NaN when ``actual`` has a NaN)."""
    a, e = _pair(actual, expected)
    return (a - e).abs().max().item()


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """The largest absolute error relative to the largest magnitude of the truth:
    max |actual - expected| / max |expected| (NaN when ``actual`` has a NaN).

    One scale for the whole tensor, so an element near zero does not blow the figure up; the shapes
    must match (no broadcasting).
    """
    a, e = _pair(actual, expected)
    return ((a - e).abs().max() / e.abs().max().clamp_min(_TINY)).item()


def max_rel_err(actual: Iterable[torch.Tensor], expected: Iterable[torch.Tensor]) -> float:
    """The largest :func:`rel_err` over paired tensors (e.g. a model's outputs), each on its own scale."""
    return max((rel_err(a, e) for a, e in zip(actual, expected, strict=True)), default=0.0)


def rel_rms(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Relative RMS error: sqrt(mean((actual - expected)^2)) / sqrt(mean(expected^2))."""
    a, e = _pair(actual, expected)
    return ((a - e).pow(2).mean().sqrt() / e.pow(2).mean().sqrt().clamp_min(_TINY)).item()


def grad_errors(grads: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> dict[str, float]:
    """Relative RMS error of each parameter gradient of ``grads`` against ``ref`` (names of both).

    Each gradient is measured on its own scale, or on that of all gradients together when it is
    smaller: a conv bias before BatchNorm has a gradient of pure round-off, whose relative error
    means nothing (:func:`rel_err` uses the largest magnitude for the same reason).
    """
    rms = {n: ref[n].double().pow(2).mean().sqrt().item() for n in ref}
    total = sum(g.numel() for g in ref.values())
    floor = math.sqrt(sum(r * r * ref[n].numel() for n, r in rms.items()) / total)
    return {n: (grads[n].double() - ref[n].double()).pow(2).mean().sqrt().item() / max(rms[n], floor, _TINY)
            for n in ref if n in grads}


def whole_grad_error(grads: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> float:
    """Relative RMS error of all parameter gradients taken as one vector (names of ``ref``)."""
    num = sum((grads[n].double() - ref[n].double()).pow(2).sum().item() for n in ref if n in grads)
    den = sum(ref[n].double().pow(2).sum().item() for n in ref)
    return math.sqrt(num / max(den, 1e-300))
