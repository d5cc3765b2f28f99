"""Registration of mmmila's segmentation data classes in mmseg's registries.

``register_seg_modules()`` adds ``ADE20KCheckedDataset`` to mmseg's ``DATASETS`` and
``LoadCheckedSegAnnotations`` to its ``TRANSFORMS``; it does nothing when mmseg is not installed.
Nothing happens at import: the package's ``__init__`` calls the function.
"""
from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def register_seg_modules() -> bool:
    """Register the segmentation dataset and transform in mmseg (idempotent).

    Returns:
        bool: True if mmseg is installed and the classes are registered, False otherwise.
    """
    try:
        from mmseg.registry import DATASETS, TRANSFORMS
    except ImportError as err:  # mmseg is optional: detection or classification users lack it
        logger.debug('mmseg not available, segmentation datasets not registered: %s', err)
        return False
    from mmmila.datasets.ade20k import ADE20KCheckedDataset, LoadCheckedSegAnnotations
    for registry, cls in ((DATASETS, ADE20KCheckedDataset), (TRANSFORMS, LoadCheckedSegAnnotations)):
        if registry.module_dict.get(cls.__name__) is not cls:
            registry.register_module(module=cls, force=True)
    return True
