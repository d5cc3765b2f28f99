"""Old import paths of names that moved: they keep working for one release, with a DeprecationWarning.

A module whose names moved sets ``__getattr__ = moved_names(__name__, {old: 'new.module:new_name'})``.
"""
from __future__ import annotations

import importlib
import warnings


def moved_names(module_name: str, moved: dict[str, str]):
    """A module ``__getattr__`` that serves each moved name from its new home, with a warning."""
    def __getattr__(name: str):
        if name not in moved:
            raise AttributeError(f'module {module_name!r} has no attribute {name!r}')
        new_module, _, new_name = moved[name].partition(':')
        warnings.warn(f'{module_name}.{name} moved to {new_module}.{new_name}; the old name will be '
                      'removed in the next release', DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(new_module), new_name)
    return __getattr__
