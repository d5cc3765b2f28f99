"""Small MILA models shared by the compile, export and ONNX tests, and the reading of dynamo's
graph-break log that the compiled-Runner tests share (errors: ``mmmila.bench.errors``)."""
from __future__ import annotations

import re

import torch

from ..conftest import TINY_ARCH


def tiny_backbone(seed: int = 0, train: bool = False):
    """The tiny MILA (C = 32, depths 1/1/2/1) with all four outputs, no drop path."""
    from mmmila.models import MILA
    torch.manual_seed(seed)
    model = MILA(arch=TINY_ARCH, out_indices=(0, 1, 2, 3), drop_path_rate=0.0)
    model.init_weights()
    with torch.no_grad():   # non-trivial BatchNorm statistics and affine parameters
        for name, buf in model.named_buffers():
            if name.endswith('running_var'):
                buf.uniform_(0.5, 1.5)
            elif name.endswith('running_mean'):
                buf.normal_(0, 0.1)
    return model.train(train)


# dynamo's graph-break log lines (TORCH_LOGS=graph_breaks) name the user frame: "... at FILE:LINE"
_GRAPH_BREAK_AT = re.compile(r'[Gg]raph break.*?(?:File "|at )([^":\s]+\.py)', re.S)


def graph_break_files(log: str) -> set[str]:
    """The source files that dynamo's graph-break log lines in ``log`` name."""
    return set(_GRAPH_BREAK_AT.findall(log))
