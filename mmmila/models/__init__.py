"""MILA models: the backbone and its layers (registration: ``mmmila/registry.py``)."""
from mmmila.models.backbones.mila import MILA

__all__ = ['MILA']
