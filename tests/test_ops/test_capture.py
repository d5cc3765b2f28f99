"""The one answer to "is a graph being captured, and by what" (mmmila.ops.capture)."""
from __future__ import annotations

import warnings

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from mmmila.ops.capture import DYNAMO, FAKE, JIT, ONNX, capturing_graph, graph_capture, wants_plain_ops


def _seen(x: torch.Tensor) -> torch.Tensor:
    """x plus a code of what graph_capture() said while x was computed on: a traced graph keeps the
    branch its tracer took."""
    code = {None: 0, FAKE: 1, JIT: 2, DYNAMO: 3}[graph_capture()]
    return x + code


def test_eager_is_no_capture():
    assert graph_capture() is None and not capturing_graph() and not wants_plain_ops()
    assert _seen(torch.zeros(1)).item() == 0


def test_fake_tensor_mode():
    with FakeTensorMode():
        assert graph_capture() == FAKE and capturing_graph() and not wants_plain_ops()
    assert graph_capture() is None


def test_jit_trace_wants_plain_ops():
    seen = []
    traced = torch.jit.trace(lambda x: (seen.append(wants_plain_ops()), _seen(x))[1], torch.zeros(1),
                             check_trace=False)
    assert seen == [True]
    assert traced(torch.zeros(1)).item() == 2


def test_dynamo():
    torch._dynamo.reset()
    compiled = torch.compile(_seen, backend='eager', fullgraph=True)
    assert compiled(torch.zeros(1)).item() == 3


_SEEN: list = []   # module-level: torch.export copies a module's own attributes


class _Records(torch.nn.Module):
    """Records what wants_plain_ops() and graph_capture() say while its forward runs (in _SEEN)."""

    def forward(self, x):
        _SEEN.append((wants_plain_ops(), graph_capture()))
        return x + 1


def test_every_exporter_and_torch_export(tmp_path):
    """wants_plain_ops() answers False at once when neither torch.jit's tracer nor torch.export is on
    (its fast path); these are the captures that must still get the full answer."""
    seen = _SEEN
    seen.clear()
    model = _Records().eval()
    x = torch.zeros(2)
    with warnings.catch_warnings():   # torch 2.9+ says the TorchScript exporter is legacy; it still runs
        warnings.simplefilter('ignore', DeprecationWarning)
        torch.onnx.export(model, (x,), str(tmp_path / 'ts.onnx'), dynamo=False)
    assert seen and all(s == (True, JIT) for s in seen)
    seen.clear()
    torch.onnx.export(model, (x,), dynamo=True)                                # dynamo-based exporter
    assert seen and all(s == (True, ONNX) for s in seen)
    seen.clear()
    torch.export.export(model, (x,), strict=False)   # torch.export alone keeps the registered ops
    assert seen and all(s == (False, DYNAMO) for s in seen)
    seen.clear()
    torch.jit.trace(model, (x,), check_trace=False)
    assert seen and all(s == (True, JIT) for s in seen)   # (tracing a module runs it more than once)
    seen.clear()
    model(x)
    assert seen == [(False, None)]
