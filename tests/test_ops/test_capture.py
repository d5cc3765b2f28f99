"""The one answer to "is a graph being captured, and by what" (mmmila.ops.capture)."""
from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from mmmila.ops.capture import DYNAMO, FAKE, JIT, capturing_graph, graph_capture, wants_plain_ops


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
