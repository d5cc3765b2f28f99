"""Deprecated: registration happens in :mod:`mmmila.registry` (``register_defaults``, called by
``import mmmila``); ``register_seg_modules`` keeps working until 0.2.0, with a warning."""
from __future__ import annotations

import warnings


def register_seg_modules() -> bool:
    """Deprecated: register the segmentation dataset and transform in mmseg (idempotent).

    Returns:
        bool: True if mmseg is installed and the classes are registered, False otherwise.
    """
    from mmmila.registry import installed_registries, register_defaults

    warnings.warn('mmmila.datasets.seg_registration.register_seg_modules() is deprecated: import mmmila '
                  'registers the segmentation classes (mmmila.registry.register_defaults)',
                  DeprecationWarning, stacklevel=2)
    register_defaults()
    return bool(installed_registries('datasets', ('mmseg',)))
