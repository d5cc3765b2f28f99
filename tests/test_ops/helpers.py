"""Helpers shared by the op and kernel tests: inputs, a float64 ground truth, error reports (the
measures and ``outputs_and_grads`` are ``mmmila.bench``'s)."""
from __future__ import annotations

import torch

from mmmila.bench.attention_calls import AttentionOpsSeen  # noqa: F401  (used by the op and kernel tests)
from mmmila.bench.errors import max_abs_err, rel_err, rel_rms
from mmmila.bench.float64_attention import attention_f64
from mmmila.bench.steps import outputs_and_grads

from ..conftest import seed_for


def make_inputs(batch: int, hw: tuple[int, int], num_heads: int, head_dim: int = 32,
                dtype: torch.dtype = torch.float32, device='cpu', scale: float = 1.0):
    """Seeded qk (B, N, 2C), v (B, N, C) and an upstream gradient g (B, N, C)."""
    gen = torch.Generator().manual_seed(seed_for(batch * 1000 + hw[0] * 100 + hw[1] * 10 + num_heads))
    n, c = hw[0] * hw[1], num_heads * head_dim
    qk = (torch.randn(batch, n, 2 * c, generator=gen) * scale).to(device, dtype)
    v = torch.randn(batch, n, c, generator=gen).to(device, dtype)
    g = torch.randn(batch, n, c, generator=gen).to(device, dtype)
    return qk, v, g


def float64_truth(qk, v, g, hw, num_heads):
    """(out, dqk, dv) of :func:`attention_f64` on float64 copies of the inputs (float64 grads)."""
    return outputs_and_grads(attention_f64, qk.double(), v.double(), g.double(), hw, num_heads)


def assert_rel_close(name: str, actual: torch.Tensor, expected: torch.Tensor, rtol: float) -> None:
    """max |actual - expected| <= rtol * max |expected|, reported as fla does on failure."""
    assert actual.shape == expected.shape, f'{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}'
    rel = rel_err(actual, expected)
    assert rel <= rtol, (f'{name}: max-abs err {max_abs_err(actual, expected):.3e}, rel {rel:.3e} > {rtol:.1e}, '
                         f'rel RMS {rel_rms(actual, expected):.3e}')


def assert_flash_rule(name: str, actual: torch.Tensor, lowp_ref: torch.Tensor, ref: torch.Tensor,
                      rtol: float, floor: float = 1e-3) -> None:
    """FlashAttention's rule for 16-bit dtypes, with the issue's bound on top.

    ``actual`` (the kernel in the low dtype) must be within twice the error of ``lowp_ref`` (the
    reference run in the same dtype) of ``ref`` (float32/64), plus ``floor`` * max |ref|; and
    within ``rtol`` * max |ref| in any case.
    """
    err, rel = max_abs_err(actual, ref), rel_err(actual, ref)
    err_ref = max_abs_err(lowp_ref, ref)
    scale = ref.double().abs().max().item()
    bound = 2 * err_ref + floor * scale
    assert err <= bound and rel <= rtol, (
        f'{name}: max-abs err {err:.3e} (bound {bound:.3e} = 2 x reference-in-dtype err {err_ref:.3e}'
        f' + floor), rel {rel:.3e} (limit {rtol:.1e}), rel RMS {rel_rms(actual, ref):.3e}')
