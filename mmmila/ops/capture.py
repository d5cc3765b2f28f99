"""The one answer to "is a graph being captured now, and by what?".

Code that must behave differently while a graph is captured asks :func:`graph_capture`: the
attention and block-op dispatchers (plain ops for FLOP counters and the TorchScript ONNX exporter)
and the size-keyed caches of tables (no cached tensor may enter a traced graph, and a symbolic
size cannot be a cache key).
"""
from __future__ import annotations

import torch

# The kinds of capture, as :func:`graph_capture` names them.
JIT = 'jit'          # torch.jit.trace / script (fvcore and mmengine FLOP counters)
ONNX = 'onnx'        # the TorchScript-based torch.onnx exporter
DYNAMO = 'dynamo'    # torch.compile, torch.export and the dynamo-based ONNX exporter
FAKE = 'fake'        # fake tensors propagating shapes (meta kernels, shape inference)


def graph_capture() -> str | None:
    """What is capturing a graph now: :data:`DYNAMO`, :data:`JIT`, :data:`ONNX`, :data:`FAKE`, or
    None in plain eager execution.

    Dynamo is asked first: it traces this function away (the other checks would not be traceable).
    The ONNX exporter is asked before ``torch.compiler.is_compiling()``: the dynamo-based exporter
    runs torch.export in non-strict mode, where that is true too, and its graph must hold plain ops.
    """
    if torch.compiler.is_dynamo_compiling():
        return DYNAMO
    if torch.jit.is_tracing():
        return JIT
    if torch.onnx.is_in_onnx_export():
        return ONNX
    if torch.compiler.is_compiling():   # torch.export in non-strict mode
        return DYNAMO
    # an active FakeTensorMode (what torch._guards.detect_fake_mode() finds without inputs, outside
    # dynamo), asked the fast way: this runs on every eager call of the ops
    return FAKE if torch._C._get_dispatch_mode(torch._C._TorchDispatchModeKey.FAKE) is not None else None


def capturing_graph() -> bool:
    """Whether any graph is being captured (:func:`graph_capture` is not None)."""
    return graph_capture() is not None


def wants_plain_ops() -> bool:
    """Whether registered ops should be replaced by their plain-op decompositions now: while
    torch.jit traces (FLOP counters must see the matrix products) and while the TorchScript ONNX
    exporter runs (ONNX runtimes know no mmmila op).

    Every eager call of the block's ops asks this, so the common answer comes from two flags: an
    ONNX export runs under torch.jit's tracer (the TorchScript exporter) or under torch.export
    (the dynamo-based one, where ``torch.compiler.is_compiling()`` is true), so with neither of
    them on, nothing wants plain ops (:func:`graph_capture` asks five things, a few µs a call).
    """
    if torch.compiler.is_dynamo_compiling():   # first: dynamo traces this function away
        return False
    if not torch.jit.is_tracing() and not torch.compiler.is_compiling():
        return False
    return graph_capture() in (JIT, ONNX)
