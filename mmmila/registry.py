"""Registration: the one place where mmmila's classes enter OpenMMLab registries.

:func:`register` puts classes into one kind of registry (``models``, ``datasets``, ``transforms``,
``hooks``) of every installed library among those named, idempotently; every registering module
calls it. :func:`register_defaults` is what ``import mmmila`` registers (the policy is in
docs/architecture.md):

- ``MILA`` in the ``MODELS`` of mmpretrain, mmdet and mmseg, those that are installed;
- with mmseg installed, the checked ADE20K dataset and annotation loader in its ``DATASETS`` and
  ``TRANSFORMS``.

Opt-in, by importing the module that registers them: ``mmmila.distill`` (the MESA hook in
mmengine's ``HOOKS``, the MESA classifier in mmpretrain's ``MODELS``).
"""
from __future__ import annotations

import importlib
import logging

LIBRARIES = ('mmpretrain', 'mmdet', 'mmseg')
KINDS = {'models': 'MODELS', 'datasets': 'DATASETS', 'transforms': 'TRANSFORMS', 'hooks': 'HOOKS'}
logger = logging.getLogger(__name__)


def installed_registries(kind: str, libraries: tuple[str, ...] = LIBRARIES) -> dict:
    """``{library: registry}`` of the ``kind`` registry of each of ``libraries`` that imports
    (``'mmengine'`` names mmengine's root registries, which every scope falls back to)."""
    if kind not in KINDS:
        raise ValueError(f'unknown registry kind {kind!r}; choose from {sorted(KINDS)}')
    found = {}
    for library in libraries:
        try:
            module = importlib.import_module(f'{library}.registry')
        except ImportError as err:  # a library that is not installed is simply skipped
            logger.debug('%s not available: %s', library, err)
            continue
        found[library] = getattr(module, KINDS[kind])
    return found


def register(kind: str, *classes: type, libraries: tuple[str, ...] = LIBRARIES) -> list[str]:
    """Register each class under its own name in the ``kind`` registry of every installed library
    among ``libraries`` (idempotent).

    Returns:
        list[str]: the libraries registered into (empty if none is installed).
    """
    registries = installed_registries(kind, libraries)
    for registry in registries.values():
        for cls in classes:
            # module_dict, not get(): get() would import the whole library's model zoo.
            if registry.module_dict.get(cls.__name__) is not cls:
                registry.register_module(module=cls, force=True)
    return list(registries)


def register_defaults() -> None:
    """What ``import mmmila`` registers (idempotent)."""
    from mmmila.engine.hooks import AtomicCheckpointHook, FiniteLossHook, RankZeroLoggerHook
    from mmmila.models.backbones.mila import MILA
    register('models', MILA)
    register('hooks', AtomicCheckpointHook, RankZeroLoggerHook, FiniteLossHook, libraries=('mmengine',))
    try:
        from mmmila.datasets.ade20k import ADE20KCheckedDataset, LoadCheckedSegAnnotations
    except ImportError as err:  # mmseg (or the mmcv it needs) is not installed: nothing to register
        logger.debug('mmseg not available, segmentation datasets not registered: %s', err)
        return
    register('datasets', ADE20KCheckedDataset, libraries=('mmseg',))
    register('transforms', LoadCheckedSegAnnotations, libraries=('mmseg',))
