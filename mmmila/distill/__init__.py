"""The authors' EMA self-distillation for ImageNet training ("MESA"), as mmpretrain components.

``import mmmila.distill`` registers :class:`MESAHook` in mmengine's ``HOOKS`` (found from every
scope) and, when mmpretrain is installed, :class:`MESAClassifier` in mmpretrain's ``MODELS``.
The classification configs import it with
``custom_imports=dict(imports=['mmmila', 'mmmila.distill'], allow_failed_imports=False)``.
It is opt-in (docs/architecture.md, "What import mmmila imports") because the classifier subclasses
mmpretrain's ``ImageClassifier``, which imports ``mmpretrain.models`` (seconds), and only
classification training needs it.
"""
from __future__ import annotations

from mmmila.distill.mesa_hook import MESAHook
from mmmila.registry import register


def register_distill() -> bool:
    """Register the hook, and the classifier if mmpretrain is installed; return whether it did both."""
    register('hooks', MESAHook, libraries=('mmengine',))
    try:
        from mmmila.distill.mesa_classifier import MESAClassifier
    except ImportError:  # mmpretrain is not installed: the hook alone
        return False
    register('models', MESAClassifier, libraries=('mmpretrain',))
    return True


register_distill()

__all__ = ['MESAHook', 'register_distill']
