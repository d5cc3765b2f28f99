"""What the GPU kit's sections share: the context they run in, the model under test, the choice of
attention backend, and whether torch.compile can run.

A section is a function ``section(ctx) -> dict`` (named in ``plan.SECTIONS``, listed in
``run.SECTION_FUNCS``); ``ctx`` holds ``device``, ``dry`` (the dry run), ``plan``
(:data:`mmmila.bench.gpu_kit.plan.PLAN`), ``gen`` (a ``torch.Generator`` seeded anew for each
section), ``fault``, ``staging``, ``deadline`` (``time.monotonic()`` at which the budget ends) and
what earlier sections left (``copy_gb_s``).
The returned dict has a ``status`` ('ok', 'fail', 'error', 'skipped'), usually ``rows`` and a ``note``.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import torch


def build_mila(ctx):
    """MILA-T (the dry run: a small MILA, one block per stage), four outputs, no stochastic depth."""
    from mmmila.models.backbones import MILA
    model = MILA(arch=ctx['plan']['arch'], out_indices=(0, 1, 2, 3), drop_path_rate=0.0, attn_backend='auto')
    return model.to(ctx['device'])


@contextmanager
def env_var(name: str, value: str):
    """Set the environment variable ``name`` to ``value`` inside the block, then restore it."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


@contextmanager
def attn_backend(name: str | None):
    """Route every 'auto' attention call to ``name`` through the documented environment variable
    (``None``: leave it as it is)."""
    if name is None:
        yield
        return
    from mmmila.ops import ENV_VAR
    with env_var(ENV_VAR, name):
        yield


def median_ms(ctx, fn, **kwargs) -> float:
    """:func:`mmmila.bench.timing.median_ms` with the plan's timing (the dry run: one call)."""
    from mmmila.bench.timing import median_ms as median
    return median(fn, ctx['device'], **ctx['plan']['timing'], **kwargs)


def compile_ready() -> str | None:
    """Why the compile checks cannot run yet, or None."""
    import mmmila.ops  # noqa: F401  (registers the operator once it exists)
    try:
        torch.ops.mmmila.linear_attention
    except (AttributeError, RuntimeError):
        return ('torch.ops.mmmila.linear_attention is not registered (the issue "MILA\'s attention as a '
                'first-class PyTorch operator" has not landed): the compile check is skipped')
    return None


def free(device) -> None:
    """Give the allocator's cached blocks back (between models on CUDA)."""
    if device.type == 'cuda':
        torch.cuda.empty_cache()
