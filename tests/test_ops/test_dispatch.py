"""Backend choice: argument, environment variable, no silent fallback, tracing; the op that runs."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from mmmila.bench.float64_attention import attention_f64
from mmmila.ops import ENV_VAR, choose_backend, mila_linear_attention, mila_linear_attention_ref
from mmmila.ops import dispatch

from .helpers import AttentionOpsSeen, assert_rel_close, make_inputs

HW, NH = (5, 7), 2
DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


def _run(*args, **kwargs):
    """(output, implementations run) of one mila_linear_attention call."""
    with AttentionOpsSeen() as ops:
        out = mila_linear_attention(*args, **kwargs)
    return out, ops.seen


@pytest.fixture
def inputs():
    return make_inputs(1, HW, NH, device=DEVICE)


def test_torch_backend(inputs):
    qk, v, _ = inputs
    qk.requires_grad_()
    out, seen = _run(qk, v, HW, NH, backend='torch')
    assert seen == ['torch'] and choose_backend(qk, v, HW, NH, 'torch') == 'torch'
    assert 'mmmila_linear_attention_default' in type(out.grad_fn).__name__
    assert_rel_close('out', out.detach(), attention_f64(qk.detach(), v, HW, NH), 1e-4)


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour of auto')
def test_auto_is_torch_on_cpu(inputs):
    qk, v, _ = inputs
    assert _run(qk, v, HW, NH)[1] == ['torch']
    assert _run(qk, v, HW, NH, backend='auto')[1] == ['torch']
    assert choose_backend(qk, v, HW, NH) == 'torch'


@pytest.mark.cuda
def test_auto_is_triton_on_cuda(inputs):
    qk, v, _ = inputs
    assert _run(qk, v, HW, NH)[1] == ['triton']
    assert choose_backend(qk, v, HW, NH) == 'triton'


def test_triton_backend_runs_the_kernels(inputs):
    """Under TRITON_INTERPRET=1 (tests/conftest.py, without CUDA) 'triton' runs the kernels on CPU."""
    qk, v, g = inputs
    qk.requires_grad_()
    out, seen = _run(qk, v, HW, NH, backend='triton')
    assert seen == ['triton']
    assert 'mmmila_linear_attention_triton_default' in type(out.grad_fn).__name__
    assert_rel_close('out', out.detach(), attention_f64(qk.detach(), v, HW, NH), 1e-4)


def test_unknown_backend(inputs):
    qk, v, _ = inputs
    with pytest.raises(ValueError, match='backend'):
        mila_linear_attention(qk, v, HW, NH, backend='cuda')


def test_env_var_overrides_auto_only(inputs, monkeypatch):
    qk, v, _ = inputs
    monkeypatch.setenv(ENV_VAR, 'torch')
    assert _run(qk, v, HW, NH)[1] == ['torch']
    monkeypatch.setenv(ENV_VAR, 'triton')
    assert _run(qk, v, HW, NH)[1] == ['triton']
    assert choose_backend(qk, v, HW, NH) == 'triton'
    assert _run(qk, v, HW, NH, backend='torch')[1] == ['torch']   # an explicit argument wins
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
    assert _run(qk, v, HW, NH)[1] == ['torch']


def test_triton_not_importable(inputs, monkeypatch):
    qk, v, _ = inputs
    monkeypatch.setattr(dispatch, '_triton_module', lambda: None)
    monkeypatch.setattr(dispatch, '_import_error', "ModuleNotFoundError: No module named 'triton'")
    with pytest.raises(RuntimeError, match='not importable'):
        mila_linear_attention(qk, v, HW, NH, backend='triton')
    assert _run(qk, v, HW, NH)[1] == ['torch']


@pytest.mark.filterwarnings('ignore::torch.jit.TracerWarning')
def test_tracing_uses_the_reference(inputs):
    """FLOP counters trace the model: the reference's matrix products must appear in the graph."""
    qk, v, _ = inputs
    traced = torch.jit.trace(lambda a, b: mila_linear_attention(a, b, HW, NH), (qk, v),
                             check_trace=False)
    kinds = {node.kind() for node in traced.graph.nodes()}
    assert 'aten::einsum' in kinds and not any(k.startswith('prim::PythonOp') for k in kinds)


def test_reference_is_observed_as_such(inputs):
    """The observer used above tells the plain reference from the ops (no mmmila op runs)."""
    qk, v, _ = inputs
    with AttentionOpsSeen() as ops:
        mila_linear_attention_ref(qk, v, HW, NH)
    assert ops.seen == ['reference']


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour of auto')
def test_auto_on_cpu_does_not_import_the_kernels():
    """CPU users pay nothing for the kernels: 'auto' decides without importing mmmila.kernels.

    (torch itself imports triton, when installed, the first time any custom op runs: its
    custom-op wrapper loads torch._dynamo. The kernels and their registration are not loaded.)
    """
    code = ('import sys, torch\n'
            'from mmmila.ops import mila_linear_attention, choose_backend\n'
            'qk, v = torch.randn(1, 12, 64), torch.randn(1, 12, 32)\n'
            'mila_linear_attention(qk, v, (3, 4), 1)\n'
            'print(choose_backend(qk, v, (3, 4), 1), "mmmila.kernels" in sys.modules,\n'
            '      hasattr(torch.ops.mmmila, "linear_attention_triton"))\n')
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env,
                         check=True, timeout=300).stdout.splitlines()[-1].split()  # a library may print on import
    assert out == ['torch', 'False', 'False']
