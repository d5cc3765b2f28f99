"""What one call of MILA's attention op costs the host: the ATen ops that do work and the Triton
kernel launches, counted.

:class:`CallCounter` watches a block of code with a ``TorchDispatchMode`` and counts every ATen op
that does work (views, ``detach``, dtype and conjugation queries and empty allocations excluded: they move no
data) and every Triton
kernel launch (``run`` of triton's kernel classes, compiled or interpreted), by name. A registered op
of the ``mmmila`` namespace is looked into: the mode runs its implementation with itself active, so
the ATen ops inside it are counted too. ATen ops made by a Triton launch itself (the interpreter
copies tensors to run a kernel on CPU) are not counted.

:func:`attention_launches` applies it to one warm forward and backward of
``torch.ops.mmmila.linear_attention_triton`` (and of the PyTorch op, for comparison).
"""
from __future__ import annotations

from contextlib import ExitStack

import torch

from mmmila.bench.traffic import VIEW_OPS

# Allocations without a write: the output buffers a launcher must make.
ALLOCATIONS = {'empty', 'empty_strided', 'empty_like', 'new_empty', 'new_empty_strided'}
# Ops that answer a question about their inputs and launch nothing.
METADATA = {'promote_types', 'resolve_conj', 'resolve_neg', 'is_same_size', 'result_type'}
LOOKED_INTO = ('mmmila',)


def _kernel_classes() -> list[type]:
    """Triton's kernel classes whose ``run`` launches a kernel (compiled and interpreted)."""
    classes = []
    try:
        from triton.runtime.jit import JITFunction
        classes.append(JITFunction)
        from triton.runtime.interpreter import InterpretedFunction
        classes.append(InterpretedFunction)
    except ImportError:
        pass
    return classes


class CallCounter:
    """Context manager: ``aten`` (names of the ATen ops that did work, in call order), ``launches``
    (names of the Triton kernels launched) and ``allocations`` (empty allocations), within it."""

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        self.aten, self.launches, self.allocations = [], [], []
        counter = self
        self._in_launch = 0

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(mode, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if counter._in_launch:
                    return func(*args, **kwargs)
                if func.namespace in LOOKED_INTO:
                    tensor = next(a for a in args if isinstance(a, torch.Tensor))
                    backend = torch._C.DispatchKey.CUDA if tensor.is_cuda else torch._C.DispatchKey.CPU
                    with mode:   # the implementation's own ATen calls come back here
                        return func.redispatch(torch._C.DispatchKeySet(backend), *args, **kwargs)
                name = func.overloadpacket.__name__
                if name in ALLOCATIONS:
                    counter.allocations.append(name)
                elif name.rstrip('_') not in VIEW_OPS and name not in METADATA:
                    counter.aten.append(name)
                return func(*args, **kwargs)

        self._stack = ExitStack()
        for cls in _kernel_classes():
            self._patch_run(cls)
        self._stack.enter_context(_Mode())
        return self

    def _patch_run(self, cls) -> None:
        original = cls.run

        def run(kernel, *args, **kwargs):
            self.launches.append(getattr(kernel, '__name__', None) or kernel.fn.__name__)
            self._in_launch += 1
            try:
                return original(kernel, *args, **kwargs)
            finally:
                self._in_launch -= 1
        cls.run = run
        self._stack.callback(setattr, cls, 'run', original)

    def __exit__(self, *exc):
        self._stack.close()
        return False


def attention_launches(hw: tuple[int, int] = (8, 8), num_heads: int = 2, batch: int = 1,
                       dtype: torch.dtype = torch.float32, device='cpu', backend: str = 'triton') -> dict:
    """Counts of one warm forward and one backward of the registered op of ``backend``.

    A first forward and backward of the same shape runs before, uncounted (it fills the caches:
    launch configuration, RoPE frequencies, counters, compiled kernels). The backward is
    ``torch.autograd.grad`` of the output alone, so nothing accumulates into ``.grad``.

    Returns:
        dict: {'fwd': {'launches': [...], 'aten': [...], 'allocations': [...]}, 'bwd': {...}}.
    """
    n, channels = hw[0] * hw[1], 32 * num_heads
    gen = torch.Generator().manual_seed(0)
    qk = torch.randn(batch, n, 2 * channels, generator=gen).to(device, dtype).requires_grad_()
    v = torch.randn(batch, n, channels, generator=gen).to(device, dtype).requires_grad_()
    g = torch.randn(batch, n, channels, generator=gen).to(device, dtype)
    if backend == 'triton':
        import mmmila.kernels  # noqa: F401  (registers the Triton op)
        op = torch.ops.mmmila.linear_attention_triton
    else:
        op = torch.ops.mmmila.linear_attention

    def forward():
        return op(qk, v, hw[0], hw[1], num_heads)[0]
    torch.autograd.grad(forward(), (qk, v), g)   # warm-up
    counts = {}
    with CallCounter() as fwd:
        out = forward()
    with CallCounter() as bwd:
        torch.autograd.grad(out, (qk, v), g)
    for name, c in (('fwd', fwd), ('bwd', bwd)):
        counts[name] = dict(launches=c.launches, aten=c.aten, allocations=c.allocations)
    return counts
