"""Backend choice: argument, environment variable, no silent fallback, tracing, logging."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch

from mmmila.ops import (ENV_VAR, backend_counts, last_backend, mila_linear_attention,
                        mila_linear_attention_ref, reset_backend_stats)
from mmmila.ops import dispatch

from .helpers import assert_rel_close, make_inputs

HW, NH = (5, 7), 2
DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    reset_backend_stats()


@pytest.fixture
def inputs():
    return make_inputs(1, HW, NH, device=DEVICE)


def test_torch_backend(inputs):
    qk, v, _ = inputs
    qk.requires_grad_()
    out = mila_linear_attention(qk, v, HW, NH, backend='torch')
    assert last_backend() == 'torch'
    assert type(out.grad_fn).__name__ == 'MILALinearAttnCPUFnBackward'
    assert_rel_close('out', out.detach(), mila_linear_attention_ref(qk, v, HW, NH), 1e-4)


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour of auto')
def test_auto_is_torch_on_cpu(inputs):
    qk, v, _ = inputs
    mila_linear_attention(qk, v, HW, NH)
    mila_linear_attention(qk, v, HW, NH, backend='auto')
    assert last_backend() == 'torch' and backend_counts() == {'torch': 2}


@pytest.mark.cuda
def test_auto_is_triton_on_cuda(inputs):
    qk, v, _ = inputs
    mila_linear_attention(qk, v, HW, NH)
    assert last_backend() == 'triton'


def test_triton_backend_runs_the_kernels(inputs):
    """Under TRITON_INTERPRET=1 (tests/conftest.py, without CUDA) 'triton' runs the kernels on CPU."""
    qk, v, g = inputs
    qk.requires_grad_()
    out = mila_linear_attention(qk, v, HW, NH, backend='triton')
    assert last_backend() == 'triton'
    assert type(out.grad_fn).__name__ == 'MILALinearAttnFnBackward'
    assert_rel_close('out', out.detach(), mila_linear_attention_ref(qk, v, HW, NH), 1e-4)


def test_unknown_backend(inputs):
    qk, v, _ = inputs
    with pytest.raises(ValueError, match='backend'):
        mila_linear_attention(qk, v, HW, NH, backend='cuda')


def test_env_var_overrides_auto_only(inputs, monkeypatch):
    qk, v, _ = inputs
    monkeypatch.setenv(ENV_VAR, 'torch')
    mila_linear_attention(qk, v, HW, NH)
    assert last_backend() == 'torch'
    monkeypatch.setenv(ENV_VAR, 'triton')
    mila_linear_attention(qk, v, HW, NH)
    assert last_backend() == 'triton'
    mila_linear_attention(qk, v, HW, NH, backend='torch')   # an explicit argument wins
    assert last_backend() == 'torch'
    monkeypatch.setenv(ENV_VAR, 'gpu')
    with pytest.raises(ValueError, match=ENV_VAR):
        mila_linear_attention(qk, v, HW, NH)


def test_triton_never_falls_back(inputs, monkeypatch):
    """Forced 'triton' raises when the kernels cannot run; 'auto' then takes the torch path."""
    import mmmila.kernels.function as kfn

    qk, v, _ = inputs
    qk16 = torch.randn(1, 35, 2 * 32, device=DEVICE)            # C = 32 with 2 heads: d = 16
    with pytest.raises(RuntimeError, match='head dim'):
        mila_linear_attention(qk16, qk16[..., :32], HW, 2, backend='triton')
    with pytest.raises(RuntimeError, match='dtype'):
        mila_linear_attention(qk.double(), v.double(), HW, NH, backend='triton')
    if qk.is_cuda:
        return
    monkeypatch.setattr(kfn, 'is_interpreted', lambda: False)   # as if TRITON_INTERPRET were unset
    with pytest.raises(RuntimeError, match='TRITON_INTERPRET=1'):
        mila_linear_attention(qk, v, HW, NH, backend='triton')
    monkeypatch.setenv(ENV_VAR, 'triton')
    with pytest.raises(RuntimeError, match='TRITON_INTERPRET=1'):
        mila_linear_attention(qk, v, HW, NH)
    monkeypatch.delenv(ENV_VAR)
    mila_linear_attention(qk, v, HW, NH)
    assert last_backend() == 'torch'
    assert backend_counts() == {'torch': 1}


def test_triton_not_importable(inputs, monkeypatch):
    qk, v, _ = inputs
    monkeypatch.setattr(dispatch, '_triton_module', lambda: None)
    monkeypatch.setattr(dispatch, '_import_error', "ModuleNotFoundError: No module named 'triton'")
    with pytest.raises(RuntimeError, match='not importable'):
        mila_linear_attention(qk, v, HW, NH, backend='triton')
    mila_linear_attention(qk, v, HW, NH)
    assert last_backend() == 'torch'


@pytest.mark.filterwarnings('ignore::torch.jit.TracerWarning')
def test_tracing_uses_the_reference(inputs):
    """FLOP counters trace the model: the reference's matrix products must appear in the graph."""
    qk, v, _ = inputs
    traced = torch.jit.trace(lambda a, b: mila_linear_attention(a, b, HW, NH), (qk, v),
                             check_trace=False)
    assert last_backend() == 'reference'
    kinds = {node.kind() for node in traced.graph.nodes()}
    assert 'aten::einsum' in kinds and not any(k.startswith('prim::PythonOp') for k in kinds)


def test_choice_logged_once(inputs, caplog):
    qk, v, _ = inputs
    dispatch._logged.clear()
    with caplog.at_level(logging.INFO, logger='mmmila.ops.dispatch'):
        for _ in range(3):
            mila_linear_attention(qk, v, HW, NH, backend='torch')
    records = [r for r in caplog.records if 'backend' in r.getMessage()]
    assert len(records) == 1 and "'torch' -> torch" in records[0].getMessage()
    assert 'requested' in records[0].getMessage()


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour of auto')
def test_auto_on_cpu_does_not_import_triton():
    """CPU users pay nothing for the kernels: 'auto' decides without importing triton."""
    code = ('import sys, torch\n'
            'from mmmila.ops import mila_linear_attention, last_backend\n'
            'mila_linear_attention(torch.randn(1, 12, 64), torch.randn(1, 12, 32), (3, 4), 1)\n'
            'print(last_backend(), "triton" in sys.modules)\n')
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env,
                         check=True, timeout=300).stdout.split()
    assert out == ['torch', 'False']
