"""mmmila: MILA (Mamba-Inspired Linear Attention) backbones for OpenMMLab.

``import mmmila`` registers ``MILA`` in the mmpretrain, mmdet and mmseg registries that are installed
and activates the checkpoint trust policy (``mmmila/checkpoint.py``), so a config needs only
``custom_imports=dict(imports=['mmmila'], allow_failed_imports=False)``.
"""
from .version import __version__
from . import checkpoint  # noqa: E402,F401  (checkpoint loading policy)
from . import models  # noqa: E402,F401  (registration)
from .datasets.seg_registration import register_seg_modules

register_seg_modules()  # validating ADE20K dataset and annotation loader, in mmseg if installed

__all__ = ['__version__']
