from .mila import MILA

__all__ = ['MILA']
