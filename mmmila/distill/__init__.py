"""The authors' EMA self-distillation for ImageNet training ("MESA"), as mmpretrain components.

``import mmmila.distill`` registers :class:`MESAHook` in mmengine's ``HOOKS`` (found from every
scope) and, when mmpretrain is installed, :class:`MESAClassifier` in mmpretrain's ``MODELS``.
The classification configs import it with
``custom_imports=dict(imports=['mmmila', 'mmmila.distill'], allow_failed_imports=False)``.
It is kept out of ``import mmmila`` because it imports ``mmpretrain.models`` (several seconds),
which detection and segmentation do not need.
"""
from __future__ import annotations

from .mesa_hook import MESAHook


def register_distill() -> bool:
    """Register the hook, and the classifier if mmpretrain imports; return whether it did both."""
    from mmengine.registry import HOOKS

    from mmmila.registry import installed_model_registries, register_modules

    if HOOKS.module_dict.get('MESAHook') is not MESAHook:
        HOOKS.register_module(module=MESAHook, force=True)
    registries = installed_model_registries()
    if 'mmpretrain' not in registries:
        return False
    from .mesa_classifier import MESAClassifier
    register_modules(MESAClassifier, registries={'mmpretrain': registries['mmpretrain']})
    return True


register_distill()

__all__ = ['MESAHook', 'register_distill']
