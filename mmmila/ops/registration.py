"""How mmmila registers its operators: one lean path from a call to its implementation.

``torch.library.custom_op`` puts several Python layers around every call: a generated
``autograd.Function`` fed a metadata object, a pass that fills the schema's defaults back in, an
aliasing check and a dynamo-disabling wrapper around the implementation, and all of it again for
the backward op. Measured on this project's CPU (2026-12-06, torch 2.13, 1 thread, tiny tensors): a
forward and backward pair of ``dwconv_tokens`` cost 571 µs, of which 300 µs are its convolutions,
where a plain ``autograd.Function`` around the same code costs 400 µs and this module's path 455 µs;
one op call without autograd costs 15 µs where an op defined with ``torch.library.Library`` costs
5 µs. A MILA-T training step makes 147 such pairs; on a GPU, where
the step is bound by the host, every microsecond of them is lost time.

So the PyTorch implementations are defined here with ``torch.library.Library`` directly, and every
mmmila op, these and the Triton ``triton_op`` ones alike, gets its autograd from one lean kernel:

- :func:`define_op` infers the schema from the function's annotations (as custom_op does), defines
  the op with the ``pt2_compliant_tag`` and registers the function as its implementation on every
  device (``CompositeExplicitAutograd``). Fakes are registered with ``torch.library.register_fake``.
  :func:`define_device_impl` puts a device's own implementation in front of it (the compiled CPU
  kernels, :mod:`mmmila.ops.cpu_kernels`).
- :func:`register_autograd` registers a Python kernel for the ``Autograd`` key. Without grad mode,
  or when no input requires grad, it calls the implementation below autograd; otherwise an
  ``autograd.Function`` does, runs ``setup_context(ctx, inputs, output)``, and in backward
  ``backward(ctx, *grads)``: the signatures of ``torch.library.register_autograd``. Lists of
  tensors (in and out) are flattened for ``autograd.Function`` and given back as lists, and
  ``ctx.needs_input_grad`` is indexed by the op's own arguments.
  A ``triton_op`` is a custom op: its autograd kernel is replaced by this one.
- :func:`mark_backward_op` gives a backward op that kernel with a backward that raises: inside a
  backward, grad mode is off and the op goes straight to its implementation; differentiating its
  outputs (``create_graph=True``) fails with a clear error, as no mmmila op defines a second
  derivative.
- :func:`implementation` is the Python function behind an op (the launch counter calls it).

torch.compile, torch.export and ``torch.library.opcheck`` see these ops as they see custom ops: an
``OpOverload`` with a fake implementation and an autograd kernel, traced by AOTAutograd.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch

NAMESPACE = 'mmmila'
_LIBRARY = torch.library.Library(NAMESPACE, 'FRAGMENT')
_IMPLEMENTATIONS: dict[str, Callable] = {}
_AFTER_AUTOGRAD = torch._C._after_autograd_keyset


def _overload(op) -> torch._ops.OpOverload:
    """The OpOverload of an op given as an OpOverload or a custom op (``custom_op`` / ``triton_op``)."""
    return op if isinstance(op, torch._ops.OpOverload) else op._opoverload


def define_op(qualname: str) -> Callable[[Callable], torch._ops.OpOverload]:
    """Decorator: define ``qualname`` ('mmmila::name') with the schema of the decorated function's
    annotations (no argument is mutated) and the function as its implementation on every device;
    returns the op, ``torch.ops.mmmila.name.default``."""
    namespace, name = qualname.split('::')
    if namespace != NAMESPACE:
        raise ValueError(f'mmmila ops live in the {NAMESPACE!r} namespace, got {qualname!r}')

    def define(fn: Callable) -> torch._ops.OpOverload:
        schema = torch.library.infer_schema(fn, mutates_args=())
        _LIBRARY.define(name + schema, tags=(torch.Tag.pt2_compliant_tag,))
        _LIBRARY.impl(name, fn, 'CompositeExplicitAutograd')
        _IMPLEMENTATIONS[qualname] = fn
        return getattr(torch.ops.mmmila, name).default

    return define


def define_device_impl(op: torch._ops.OpOverload, key: str) -> Callable[[Callable], Callable]:
    """Decorator: register the decorated function as ``op``'s implementation for one dispatch key
    ('CPU', 'CUDA', ...), in front of the every-device one of :func:`define_op` (which stays the
    implementation of the other devices, and is what :func:`implementation` returns)."""
    if op.namespace != NAMESPACE:
        raise ValueError(f'{op} is not an {NAMESPACE} op')

    def register(fn: Callable) -> Callable:
        _LIBRARY.impl(op._schema.name.split('::')[1], fn, key)
        return fn

    return register


def implementation(op: torch._ops.OpOverload) -> Callable | None:
    """The Python function that implements an mmmila op (defined here, or a custom / Triton op);
    None for an op of another namespace or one without a Python implementation."""
    if op.namespace != NAMESPACE:
        return None
    name = op._schema.name
    if name in _IMPLEMENTATIONS:
        return _IMPLEMENTATIONS[name]
    from torch._library.custom_ops import OPDEFS   # noqa: PLC0415 (private: custom / Triton ops)
    opdef = OPDEFS.get(name)
    return None if opdef is None else opdef._init_fn


def _register_kernel(op, kernel, key: str, **kwargs) -> None:
    """Register ``kernel`` for ``key`` of ``op``. For a custom op this replaces the kernel that
    custom_op registered (the dispatcher's warning about the replacement is the point here, so it is
    not shown); a PyTorch whose ``Library.impl`` cannot replace one keeps custom_op's, which does
    the same work more slowly."""
    overload = _overload(op)
    name = overload._schema.name.split('::')[1]
    if isinstance(op, torch._ops.OpOverload):
        _LIBRARY.impl(name, kernel, key, **kwargs)
        return
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='(?s).*Overriding a previously registered kernel')
        try:
            _LIBRARY.impl(name, kernel, key, allow_override=True, **kwargs)
        except (TypeError, RuntimeError):   # no allow_override (older PyTorch): keep custom_op's
            pass


def _flatten(args: tuple) -> tuple[tuple, tuple]:
    """(flat, spec): the arguments with each list of tensors spread out; ``spec`` holds the length
    of each list argument and -1 for any other argument."""
    flat, spec = [], []
    for a in args:
        if isinstance(a, (list, tuple)) and a and isinstance(a[0], torch.Tensor):
            flat.extend(a)
            spec.append(len(a))
        else:
            flat.append(a)
            spec.append(-1)
    return tuple(flat), tuple(spec)


def _unflatten(flat, spec: tuple) -> tuple:
    """The arguments of :func:`_flatten` back from ``flat`` (lists as lists)."""
    args, i = [], 0
    for n in spec:
        if n < 0:
            args.append(flat[i])
            i += 1
        else:
            args.append(list(flat[i:i + n]))
            i += n
    return tuple(args)


def register_autograd(op, backward: Callable, setup_context: Callable) -> None:
    """Give ``op`` (an OpOverload defined by :func:`define_op`, or a ``custom_op`` / ``triton_op``)
    the lean autograd kernel of the module doc: ``setup_context(ctx, inputs, output)`` after the
    forward, ``backward(ctx, *grads)`` returns one gradient (or list of them, or None) per input."""
    overload = _overload(op)
    list_output = overload._schema.returns[0].type.kind() == 'ListType'
    list_input = any(a.type.kind() == 'ListType' for a in overload._schema.arguments)

    def function_forward(ctx, keyset, spec, *flat):
        args = flat if spec is None else _unflatten(flat, spec)
        with torch._C._AutoDispatchBelowAutograd():
            output = overload.redispatch(keyset & _AFTER_AUTOGRAD, *args)
        setup_context(ctx, args, output)
        ctx.spec = spec
        return tuple(output) if list_output else output

    def function_backward(ctx, *grads):
        spec, needs = ctx.spec, ctx.needs_input_grad
        ctx.needs_input_grad = needs[2:] if spec is None else _unflatten(needs[2:], spec)   # by argument
        try:
            result = backward(ctx, list(grads)) if list_output else backward(ctx, *grads)
        finally:   # a retained graph's next backward reads them again
            ctx.needs_input_grad = needs
        if not isinstance(result, tuple):
            result = (result,)
        if spec is None:
            return (None, None, *result)
        flat = [None, None]
        for n, g in zip(spec, result):
            if n < 0:
                flat.append(g)
            else:
                flat.extend(g if g is not None else (None,) * n)
        return tuple(flat)

    # named as custom_op names its Function: the graph's nodes read 'mmmila_<op>_defaultBackward'
    name = f'{overload.namespace}_{overload._opname}_{overload._overloadname}'
    Function = type(name, (torch.autograd.Function,),
                    {'forward': staticmethod(function_forward),
                     'backward': staticmethod(function_backward)})

    def kernel(keyset, *args):
        if torch.is_grad_enabled() and torch._C._any_requires_grad(*args):
            flat, spec = _flatten(args) if list_input else (args, None)   # None: nothing spread
            output = Function.apply(keyset, spec, *flat)
            return list(output) if list_output else output
        with torch._C._AutoDispatchBelowAutograd():
            return overload.redispatch(keyset & _AFTER_AUTOGRAD, *args)

    if not isinstance(op, torch._ops.OpOverload):
        op.register_autograd(backward, setup_context=setup_context)   # what custom_op keeps of it
    _register_kernel(op, kernel, 'Autograd', with_keyset=True)


def mark_backward_op(op) -> None:
    """Give a backward op the lean autograd kernel with a backward that raises: the op runs as it
    is (inside a backward, grad mode is off and nothing is recorded), and differentiating its
    outputs, e.g. under ``create_graph=True``, fails with a clear error (see the module doc)."""
    name = _overload(op)._schema.name

    def setup_context(ctx, inputs, output):
        pass

    def backward(ctx, *grads):
        raise RuntimeError(f'{name}: the backward of an mmmila op is not differentiable (no second '
                           f'derivative, e.g. under create_graph=True)')

    register_autograd(op, backward, setup_context)
