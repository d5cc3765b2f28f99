"""mmmila: MILA (Mamba-Inspired Linear Attention) backbones for OpenMMLab.

``import mmmila`` registers ``MILA`` in the mmpretrain, mmdet and mmseg registries that are
installed (and, with mmseg, the checked ADE20K dataset and annotation loader), and installs the
checkpoint policy into mmengine, so a config needs only
``custom_imports=dict(imports=['mmmila'], allow_failed_imports=False)``. It needs only torch and
mmengine. What it imports and what stays opt-in: docs/architecture.md.
"""
from mmmila.version import __version__

try:
    import mmengine  # noqa: F401  (setup.py cannot require it: two distributions provide it)
except ModuleNotFoundError as err:
    raise ModuleNotFoundError(
        "mmmila needs mmengine, and it is not installed: install OpenMMLab's (pip install mmengine) or "
        "OneDL's (pip install onedl-mmengine), or let tools/install.sh build either stack (docs/install.md)."
    ) from err

from mmmila import integration, registry  # noqa: E402

registry.register_defaults()
integration.install()

__all__ = ['__version__']
