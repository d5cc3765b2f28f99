"""Small MILA models shared by the compile, export and ONNX tests, and the reading of dynamo's
graph-break log that the compiled-Runner tests share (errors: ``mmmila.bench.errors``)."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import torch

from ..conftest import TINY_ARCH, seed_for


def tiny_backbone(seed: int = 0, train: bool = False):
    """The tiny MILA (C = 32, depths 1/1/2/1) with all four outputs, no drop path."""
    from mmmila.models import MILA
    torch.manual_seed(seed_for(seed))
    model = MILA(arch=TINY_ARCH, out_indices=(0, 1, 2, 3), drop_path_rate=0.0)
    model.init_weights()
    with torch.no_grad():   # non-trivial BatchNorm statistics and affine parameters
        for name, buf in model.named_buffers():
            if name.endswith('running_var'):
                buf.uniform_(0.5, 1.5)
            elif name.endswith('running_mean'):
                buf.normal_(0, 0.1)
    return model.train(train)


# dynamo's graph-break log names the frame where the graph broke in two forms (torch 2.13):
#   "Graph break in user code at FILE:LINE" (also "Graph break (user stack suppressed ...) in user
#   code at FILE:LINE"), and "Graph break: from user code at:" with that frame on the next line.
# Only these are read: a "User code traceback" that follows lists the frames from the outermost
# (the script that was run) inwards, and its first frame is not where the graph broke.
_IN_USER_CODE = re.compile(r'[Gg]raph break\b[^\n]*? in user code at (\S+?\.py):\d+')
_FROM_USER_CODE = re.compile(r'[Gg]raph break: from user code at:[^\n]*\n[^\n]*?File "([^"]+?\.py)"')


def graph_break_files(log: str) -> set[str]:
    """The source files where dynamo's graph-break log (TORCH_LOGS=graph_breaks) says graphs broke."""
    return set(_IN_USER_CODE.findall(log)) | set(_FROM_USER_CODE.findall(log))


def project_files(files) -> list[str]:
    """Those of ``files`` that belong to the project: they lie under the installed package's own
    folders (``mmmila`` and ``mmmila.kernels``), wherever the checkout is and whatever it is named."""
    roots = [Path(spec.origin).resolve().parent
             for spec in map(importlib.util.find_spec, ('mmmila', 'mmmila.kernels'))]
    return sorted(f for f in files if any(Path(f).resolve().is_relative_to(root) for root in roots))
