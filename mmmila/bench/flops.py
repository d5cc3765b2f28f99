"""Parameters and FLOPs of a model: the whole model and its backbone alone (``tools/get_flops.py``).

FLOPs follow fvcore's convention, which the paper uses: one multiply-add is one FLOP, and only
matrix products, convolutions, normalisations and a few pooling/upsampling ops are counted
(element-wise ops count 0). They are measured by tracing one forward pass of a random input with
``mmengine.analysis.FlopAnalyzer``. MILA's linear attention is counted as its three matrix products
per head, ``k_r^T v``, ``q_r S`` and ``q . mean(k)``: ``B * N * C * (2 d + 1)`` for N tokens, C
channels and head dim d. While ``torch.jit`` traces, ``mmmila.ops`` runs its plain reference, whose
matrix products the counter sees. A registered attention op traced as such (``mmmila::<name>``
node, e.g. a model that calls ``torch.ops.mmmila.linear_attention`` itself) gets a handle that
returns the same count, and so does any ``torch.autograd.Function`` defined under ``mmmila.ops``
and ``mmmila.kernels`` (traced as ``prim::PythonOp.<Name>``); an attention Function left without a
count is an error rather than a silent zero.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from typing import Callable, Iterable

import torch
import torch.nn as nn

from mmmila.bench.models import tensor_mode
from mmmila.ops.checks import check_head_layout

ATTENTION_PACKAGES = ('mmmila.ops', 'mmmila.kernels')
# The registered attention ops (torch.library): (out, S, m) = op(qk, v, H, W, num_heads, ...).
ATTENTION_OPS = ('mmmila::linear_attention', 'mmmila::linear_attention_triton')


# ---- the attention's count ---------------------------------------------------------------------
def attention_flops(batch: int, tokens: int, channels: int, num_heads: int) -> int:
    """FLOPs (multiply-adds) of one MILA linear attention call: B * N * C * (2 d + 1)."""
    return batch * tokens * channels * (2 * check_head_layout(channels, num_heads) + 1)


def discover_autograd_functions(packages: Iterable[str] = ATTENTION_PACKAGES) -> list[type]:
    """Every ``torch.autograd.Function`` subclass defined in the modules of ``packages``.

    A package that cannot be imported (e.g. ``mmmila.kernels`` without Triton) is skipped.
    """
    found: dict[str, type] = {}
    for package_name in packages:
        try:
            package = importlib.import_module(package_name)
        except ImportError:
            continue
        modules = [package]
        for info in pkgutil.walk_packages(getattr(package, '__path__', []), package_name + '.'):
            try:
                modules.append(importlib.import_module(info.name))
            except ImportError:
                continue
        for module in modules:
            for obj in vars(module).values():
                if (inspect.isclass(obj) and issubclass(obj, torch.autograd.Function)
                        and obj.__module__ == module.__name__):
                    found[f'{obj.__module__}.{obj.__qualname__}'] = obj
    return [found[k] for k in sorted(found)]


def _python_op_arguments(fn_cls: type, node) -> dict:
    """The named arguments of a traced ``prim::PythonOp`` call of ``fn_cls.forward``."""
    names = list(inspect.signature(fn_cls.forward).parameters)[1:]  # drop ctx
    tensors, scalars = iter(node.inputs()), iter(node.scalar_args())
    values = [next(tensors) if kind == 'd' else next(scalars) for kind in node.cconv()]
    return dict(zip(names, values))


def own_function_names(prefix: str = 'mmmila') -> set[str]:
    """Names of the ``autograd.Function`` classes defined in the imported modules under ``prefix``."""
    names = set()
    for module_name, module in list(sys.modules.items()):
        if module is None or not (module_name == prefix or module_name.startswith(prefix + '.')):
            continue
        for obj in list(vars(module).values()):
            if (inspect.isclass(obj) and issubclass(obj, torch.autograd.Function)
                    and obj.__module__ == module_name):
                names.add(obj.__name__)
    return names


def attention_flop_handle(fn_cls: type, head_dims: dict[int, int] | None = None) -> Callable:
    """A FlopAnalyzer handle for a linear-attention ``autograd.Function`` (traced as a PythonOp).

    The output is (B, N, C); the number of heads is the call's ``num_heads`` argument, or else
    ``C / head_dims[C]`` (the head width of the model's attention layers of width C).
    """
    from mmengine.analysis.jit_handles import get_shape

    def handle(inputs, outputs) -> int:
        shape = get_shape(outputs[0])
        if shape is None or len(shape) != 3:
            raise ValueError(f'{fn_cls.__name__}: expected a (B, N, C) output, got shape {shape}')
        batch, tokens, channels = shape
        args = _python_op_arguments(fn_cls, outputs[0].node())
        num_heads = args.get('num_heads')
        if not isinstance(num_heads, int):
            if not head_dims or channels not in head_dims:
                raise ValueError(f'{fn_cls.__name__}: cannot tell the number of heads of a call with '
                                 f'C={channels} (no num_heads argument, no attention layer of that width)')
            num_heads = channels // head_dims[channels]
        return attention_flops(batch, tokens, channels, num_heads)

    return handle


def attention_op_handle(op_name: str) -> Callable:
    """A FlopAnalyzer handle for a registered attention op traced as a ``mmmila::`` node."""
    from mmengine.analysis.jit_handles import get_shape

    def handle(inputs, outputs) -> int:
        shape = get_shape(outputs[0])
        num_heads = inputs[4].toIValue() if len(inputs) > 4 else None
        if shape is None or len(shape) != 3 or not isinstance(num_heads, int):
            raise ValueError(f'{op_name}: expected a (B, N, C) output and an int num_heads, '
                             f'got shape {shape} and num_heads {num_heads!r}')
        return attention_flops(*shape, num_heads)

    return handle


def attention_head_dims(model: nn.Module) -> dict[int, int]:
    """{C: d} over the model's attention layers (modules with ``channels`` and ``num_heads``)."""
    dims: dict[int, int] = {}
    for module in model.modules():
        channels, heads = getattr(module, 'channels', None), getattr(module, 'num_heads', None)
        if isinstance(channels, int) and isinstance(heads, int) and heads > 0:
            dims[channels] = channels // heads
    return dims


# ---- counting ------------------------------------------------------------------------------
def count(model: nn.Module, height: int, width: int, batch: int = 1) -> dict:
    """Parameters and FLOPs of ``model`` (and of ``model.backbone``) for a (batch, 3, H, W) input.

    Returns:
        dict: ``params``, ``flops``, ``backbone_params``, ``backbone_flops`` (None without a
        backbone), ``attention_ops`` (the handled Functions seen), ``attention_flops`` (their FLOPs)
        and ``unsupported`` (op -> calls).

    Raises:
        RuntimeError: if an ``autograd.Function`` of mmmila is left without a FLOP handle (the
            Functions of other libraries, e.g. mmcv's NMS and RoIAlign, are not counted, as in
            fvcore and mmdet's own tool).
    """
    from mmengine.analysis import FlopAnalyzer, parameter_count

    tensor_mode(model, height, width, batch)
    inputs = torch.rand(batch, 3, height, width)
    analyzer = FlopAnalyzer(model, (inputs,))
    head_dims = attention_head_dims(model)
    handled = {}
    for fn_cls in discover_autograd_functions():
        name = f'prim::PythonOp.{fn_cls.__name__}'
        handled[name] = fn_cls
        analyzer.set_op_handle(name, attention_flop_handle(fn_cls, head_dims))
    for op_name in ATTENTION_OPS:
        handled[op_name] = op_name
        analyzer.set_op_handle(op_name, attention_op_handle(op_name))
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings('none')
    with torch.no_grad():
        flops = analyzer.total()
    unsupported = dict(analyzer.unsupported_ops())
    own = own_function_names()
    opaque = sorted(op for op in unsupported
                    if op.startswith('prim::PythonOp.') and op.split('.', 1)[1] in own)
    if opaque:
        raise RuntimeError(f'autograd Functions without a FLOP handle (they would count 0): {opaque}')
    by_operator = analyzer.by_operator()
    seen = sorted(name for name in handled if name.split('::', 1)[1] in by_operator)
    params = parameter_count(model)
    has_backbone = isinstance(getattr(model, 'backbone', None), nn.Module)
    return dict(params=params[''], flops=flops,
                backbone_params=params['backbone'] if has_backbone else None,
                backbone_flops=analyzer.total('backbone') if has_backbone else None,
                attention_ops=seen, attention_flops=sum(by_operator[n.split('::', 1)[1]] for n in seen),
                unsupported=unsupported)


def format_report(result: dict, config: str, model: nn.Module, height: int, width: int) -> str:
    """A small text table of the counts."""
    rows = [('whole model', result['params'], result['flops'])]
    if result['backbone_flops'] is not None:
        rows.append((f'backbone ({type(model.backbone).__name__})', result['backbone_params'],
                     result['backbone_flops']))
    lines = [f'{config} ({type(model).__name__}), input 3x{height}x{width}',
             f'{"":28s}{"params":>12s}{"FLOPs":>14s}']
    lines += [f'{name:28s}{p / 1e6:>10.2f} M{f / 1e9:>12.3f} G' for name, p, f in rows]
    lines.append('FLOPs: fvcore convention (1 multiply-add = 1 FLOP; element-wise ops not counted); '
                 'linear attention: ' + (', '.join(result['attention_ops']) or 'einsum/matmul ops'))
    others = sorted(op.split('.', 1)[1] for op in result['unsupported'] if op.startswith('prim::PythonOp.'))
    if others:
        lines.append('not counted (custom ops of other libraries): ' + ', '.join(others))
    return '\n'.join(lines)
