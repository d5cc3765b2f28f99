"""Which implementation of MILA's attention ran: observed from outside, with a dispatch mode.

The op keeps no per-call state (it must trace cleanly under torch.compile), so tests and the GPU kit
watch the dispatcher instead: every call of a registered op passes through a TorchDispatchMode.
"""
from __future__ import annotations

_IMPLEMENTATIONS = {'mmmila::linear_attention': 'torch', 'mmmila::linear_attention_triton': 'triton'}


class AttentionOpsSeen:
    """Context manager that records which attention implementations run inside it.

    A dispatch mode sees every op call: ``torch.ops.mmmila.linear_attention`` is 'torch',
    ``torch.ops.mmmila.linear_attention_triton`` is 'triton', and the plain reference shows as
    'reference' (matrix products and no mmmila op). ``seen`` lists the forward ops in call order.
    """

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        seen = self.seen = []
        self.aten = set()

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(mode, func, types, args=(), kwargs=None):
                name = func._schema.name
                if name in _IMPLEMENTATIONS:
                    seen.append(_IMPLEMENTATIONS[name])
                else:
                    self.aten.add(name)
                return func(*args, **(kwargs or {}))

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)
        if not self.seen and 'aten::bmm' in self.aten:
            self.seen.append('reference')
        return False

    @property
    def last(self):
        return self.seen[-1] if self.seen else None
