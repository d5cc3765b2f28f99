"""MILA models; importing this registers the backbone in every installed OpenMMLab registry."""
from mmmila.registry import register_backbones

from .backbones import MILA

register_backbones()

__all__ = ['MILA']
