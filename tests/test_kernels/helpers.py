"""What the kernel tests share: the device they run on, whether the kernels can run there, which
opcheck tests apply, and the kernels' own rounding of a result into a 16-bit dtype (error bounds)."""
from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
# Under the interpreter the kernels are Python launched on real tensors: AOTAutograd cannot trace them
# (wrap_triton captures compiled kernels only), so opcheck's AOT test needs a GPU.
OPCHECKS = ('test_schema', 'test_autograd_registration', 'test_faketensor') if DEVICE == 'cpu' else 'ALL'


def assert_float32_rule(got: dict, ref32: dict, truth: dict) -> None:
    """Each float32 result of a kernel no further from the float64 truth than the PyTorch
    implementation's float32 result on the same draw (up to 4x: the orders of the float32 sums
    differ), plus a few float32 rounding steps where those are exact; same dtypes and shapes."""
    from mmmila.bench.errors import rel_rms

    assert set(got) == set(truth)
    for name, exact in truth.items():
        assert got[name].dtype == ref32[name].dtype and got[name].shape == exact.shape, name
        err, err_ref = rel_rms(got[name], exact), rel_rms(ref32[name], exact)
        assert err <= 4 * err_ref + 4e-7, f'{name}: rel RMS {err:.3e}, float32 reference {err_ref:.3e}'


def require_runnable_kernels() -> None:
    """Fail (not skip) when the kernels were not built for this machine: without CUDA they must run
    under the Triton interpreter."""
    from mmmila.kernels import is_interpreted

    if DEVICE == 'cpu' and not is_interpreted():
        pytest.fail('the kernels are not built for the Triton interpreter: TRITON_INTERPRET=1 must be '
                    'set before triton is first imported (tests/conftest.py does it without CUDA)')


@triton.jit
def _store_kernel(src_ptr, dst_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(dst_ptr + offs, tl.load(src_ptr + offs, mask=mask).to(dst_ptr.dtype.element_ty), mask=mask)


def stored_as(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` rounded to ``dtype`` as the kernels store a float32 result (``tl.store`` of ``.to``).

    On a GPU that is round-to-nearest-even, the same as ``t.to(dtype)``. The Triton interpreter
    (triton 3.x, CPU) truncates float32 to bfloat16 instead, which doubles the rounding error of
    every bfloat16 result the kernels store there; a bound built on the error of a correctly rounded
    reference alone is then met on some draws and missed on others. The error of the exact result
    stored this way is what no kernel on that platform can beat.
    """
    src = t.detach().float().contiguous().reshape(-1)
    dst = torch.empty(src.shape, dtype=dtype, device=src.device)
    n = src.numel()
    if n:
        _store_kernel[(triton.cdiv(n, 1024),)](src, dst, n, BLOCK=1024)
    return dst.view(t.shape)
