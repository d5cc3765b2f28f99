"""mmmila: MILA (Mamba-Inspired Linear Attention) backbones for OpenMMLab.

``import mmmila`` registers ``MILA`` in the mmpretrain, mmdet and mmseg registries that are installed
and activates the checkpoint trust policy (``mmmila/checkpoint.py``), so a config needs only
``custom_imports=dict(imports=['mmmila'], allow_failed_imports=False)``.
"""
from .version import __version__
from . import checkpoint  # noqa: E402,F401  (checkpoint loading policy)
from . import models  # noqa: E402,F401  (registration)

__all__ = ['__version__']
