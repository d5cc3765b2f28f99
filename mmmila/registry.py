"""The only module that touches mmpretrain's, mmdet's and mmseg's registries.

``register_backbones()`` adds the one ``MILA`` class to each installed library's ``MODELS``.
"""
from __future__ import annotations

import importlib
import logging

REGISTRY_MODULES = ('mmpretrain.registry', 'mmdet.registry', 'mmseg.registry')
logger = logging.getLogger(__name__)


def installed_model_registries() -> dict:
    """``{'mmpretrain': MODELS, ...}`` for each of the three libraries that imports."""
    found = {}
    for name in REGISTRY_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as err:  # a library that is not installed is simply skipped
            logger.debug('%s not available: %s', name, err)
            continue
        found[name.split('.')[0]] = module.MODELS
    return found


def register_modules(*modules: type, registries: dict | None = None) -> None:
    """Register each class in every installed library's MODELS (idempotent)."""
    for registry in (registries or installed_model_registries()).values():
        for cls in modules:
            # module_dict, not get(): get() would import the whole library's model zoo.
            if registry.module_dict.get(cls.__name__) is not cls:
                registry.register_module(module=cls, force=True)


def register_backbones() -> None:
    from mmmila.models.backbones import MILA
    register_modules(MILA)
