"""Kernel launches of one training step, counted without a GPU.

On a GPU a training step of a small-kernel model is bound by the host: every aten call that does
work is at least one kernel launch, each costing a few microseconds of CPU time whatever its size.
:class:`LaunchCounter` counts what a step would launch, on any device:

- every aten call that does work: not views (``OpOverload.is_view``), not metadata queries, not bare
  allocations (``empty``, ``empty_strided``, ... write nothing); a ``zeros`` or a copy counts, and so
  does the copy that a call which may return its input makes when it does not (``x.to(dtype)``,
  ``x.contiguous()``, ``x.reshape(...)`` of a tensor that cannot be viewed so);
- the calls made *inside* mmmila's registered ops (``torch.ops.mmmila.*``): such an op is not
  counted itself; its implementation runs under the counter, so a PyTorch implementation counts
  its aten calls and a Triton implementation its kernel launches;
- every Triton kernel launch (compiled or under the Triton interpreter, ``TRITON_INTERPRET=1``).

A dispatch mode sits below autograd, so the backward's calls are counted too, in the same way.
The figure is the number of launches a GPU would see from eager PyTorch, up to how an aten call
maps to kernels there (a cuDNN convolution's backward may launch a few); the GPU kit's profile
section counts the device's own launches.
"""
from __future__ import annotations

import contextlib
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mmmila.ops.registration import implementation

# Calls that read or set metadata, or only allocate, and launch nothing.
_NO_WORK = {
    'aten::empty', 'aten::empty_strided', 'aten::empty_like', 'aten::new_empty', 'aten::new_empty_strided',
    'aten::sym_size', 'aten::sym_stride', 'aten::sym_numel', 'aten::sym_storage_offset', 'aten::is_contiguous',
    'aten::is_same_size', 'aten::is_nonzero', 'aten::set_', 'aten::lift_fresh', 'aten::resize_',
    'aten::_has_compatible_shallow_copy_type', 'aten::record_stream', 'aten::is_pinned',
    'aten::_unsafe_view', 'aten::alias', 'aten::detach', 'aten::promote_types', 'aten::result_type',
    'prim::device', 'prim::layout', 'prim::dtype',
}


def _does_work(func) -> bool:
    return not func.is_view and func._schema.name not in _NO_WORK


def _maybe_copies(func) -> bool:
    """Whether a call that may return its input (``to``, ``contiguous``, ``reshape``, ...) may also
    copy it: such ops are compositions (CompositeImplicitAutograd) of a view or a copy."""
    return torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), 'CompositeImplicitAutograd')


@dataclass
class Launches:
    """What a :class:`LaunchCounter` saw: aten calls and Triton launches by name."""

    aten: Counter = field(default_factory=Counter)
    triton: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.aten.values()) + sum(self.triton.values())

    @property
    def casts(self) -> int:
        """Dtype conversions (``_to_copy`` / ``to`` calls that reach the dispatcher)."""
        return self.aten['aten::_to_copy'] + self.aten['aten::to']


class LaunchCounter(TorchDispatchMode):
    """Count the launches of the code run inside ``with LaunchCounter() as c:`` into ``c.launches``."""

    def __init__(self) -> None:
        super().__init__()
        self.launches = Launches()
        self._patched = []
        self._in_kernel = False   # the Triton interpreter copies tensors in and out: not launches
        self._depth = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self._in_kernel:
            return func(*args, **kwargs)
        impl = implementation(func)   # mmmila's ops: run their Python code under the counter
        if impl is not None:
            with self:   # the op's own calls are counted, not the op
                return impl(*args, **kwargs)
        if func.is_view and _maybe_copies(func):
            with self:   # `to`, `contiguous`, `reshape`: count the copy they make, if they make one
                return func.decompose(*args, **kwargs)
        if _does_work(func):
            self.launches.aten[func._schema.name] += 1
        return func(*args, **kwargs)

    def __enter__(self):
        # entered again inside __torch_dispatch__ (where the mode is off the stack): count the depth
        # of the entries, not the stack, so a nested exit does not unpatch the outer one's launches
        if self._depth == 0:
            self._patch_triton()
        self._depth += 1
        return super().__enter__()

    def __exit__(self, *exc):
        out = super().__exit__(*exc)
        self._depth -= 1
        if self._depth == 0:
            self._unpatch_triton()
        return out

    def _patch_triton(self) -> None:
        try:
            from triton.runtime.interpreter import InterpretedFunction
            from triton.runtime.jit import JITFunction
        except ImportError:
            return
        counts = self.launches.triton
        for cls in (JITFunction, InterpretedFunction):
            original = cls.run

            def run(kernel, *args, _original=original, **kwargs):
                if self._in_kernel or kwargs.get('warmup', False):
                    return _original(kernel, *args, **kwargs)
                counts[getattr(kernel, '__name__', None) or kernel.fn.__name__] += 1
                self._in_kernel = True
                try:
                    return _original(kernel, *args, **kwargs)
                finally:
                    self._in_kernel = False

            cls.run = run
            self._patched.append((cls, original))

    def _unpatch_triton(self) -> None:
        for cls, original in self._patched:
            cls.run = original
        self._patched = []


def count_launches(step: Callable[[], None]) -> Launches:
    """The launches of one call of ``step`` (run it once before, to leave one-off work out)."""
    counter = LaunchCounter()
    with counter:
        step()
    return counter.launches


# ---- one training step of a backbone ---------------------------------------------------------
DTYPES = {'float32': None, 'bfloat16': torch.bfloat16, 'float16': torch.float16}


def training_step_launches(name: str, dtype: str = 'float32', size: int = 64, batch: int = 1,
                           device: str = 'cpu') -> Launches:
    """Launches of one training step of backbone ``name`` (forward in train mode, under autocast to
    ``dtype`` unless float32, the sum of every output's mean, backward), after one uncounted step.

    MILA runs its Triton path (``attn_backend='triton'``): on CPU tensors that needs the Triton
    interpreter, ``TRITON_INTERPRET=1`` before triton is imported
    (:func:`training_step_launches_in_subprocess` sets it).
    """
    from .models import build_backbone
    from .steps import model_step

    if dtype not in DTYPES:
        raise ValueError(f'dtype must be one of {sorted(DTYPES)}, got {dtype!r}')
    torch.manual_seed(0)
    model = build_backbone(name, backend='triton') if name.startswith('mila') else build_backbone(name)
    model = model.to(device)
    x = torch.rand(batch, 3, size, size, device=device)
    step = model_step(model, x, 'forward+backward', autocast=DTYPES[dtype])
    step()
    return count_launches(step)


def training_step_launches_in_subprocess(name: str, dtype: str, size: int, batch: int,
                                         device: str) -> Launches:
    """:func:`training_step_launches` in a fresh process (CPU: under the Triton interpreter)."""
    import json
    import subprocess
    import sys

    env = dict(os.environ)
    if device == 'cpu':
        env['TRITON_INTERPRET'] = '1'
    code = ('import json, sys; from mmmila.bench.launches import training_step_launches as f; '
            f'c = f({name!r}, {dtype!r}, {size}, {batch}, {device!r}); '
            'print(json.dumps([dict(c.aten), dict(c.triton)]))')
    proc = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f'counting the launches of {name} ({dtype}) failed:\n{proc.stderr[-3000:]}')
    aten, triton = json.loads(proc.stdout.strip().splitlines()[-1])
    return Launches(Counter(aten), Counter(triton))


def launch_table(results: dict[tuple[str, str], Launches], models: list[str], dtypes: list[str],
                 labels: dict[str, str]) -> str:
    """A Markdown table: one row per dtype, one column per model (total, of them casts), and the
    first model's count relative to each other model's."""
    head = '| launches per training step | ' + ' | '.join(labels[m] for m in models)
    head += ''.join(f' | {labels[models[0]]} / {labels[m]}' for m in models[1:]) + ' |'
    lines = [head, '|' + '---|' * (1 + 2 * len(models) - 1)]
    for dt in dtypes:
        cells = []
        for m in models:
            c = results[m, dt]
            cells.append(f'{c.total}' + (f' ({c.casts} casts)' if c.casts else ''))
        first = results[models[0], dt].total
        cells += [f'{first / results[m, dt].total:.2f}x' for m in models[1:]]
        lines.append(f'| {dt} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)
