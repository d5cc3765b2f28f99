"""Checks of a run's inputs before the Runner starts: data folders, annotation files, checkpoints.

Each failure raises :class:`InputError` (or :class:`~mmmila.utils.coco_format.CocoFormatError`)
naming the config key, the path and what was expected there, instead of a traceback from deep
inside a data loader or a checkpoint loader minutes later.
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Iterator

from .coco_format import validate_coco_instances

DATA_HINTS = {
    'mmdet': "the COCO 2017 folder of mmdet's layout (data/coco/ with annotations/"
             'instances_{train,val}2017.json, train2017/ and val2017/)',
    'mmseg': "the ADE20K folder of mmseg's layout (data/ade/ADEChallengeData2016/ with images/ and "
             'annotations/, each holding training/ and validation/)',
    'mmpretrain': "the ImageNet folder of mmpretrain's layout (data/imagenet/ with train/, val/ and meta/)",
}


class InputError(ValueError):
    """A path that a config or a command line names does not hold what the run needs."""


def _where(path: str) -> str:
    return path if osp.isabs(path) else f'{path} (relative to {os.getcwd()})'


def _is_remote(path: str) -> bool:
    return '://' in path


def _iter_datasets(ds: dict, where: str) -> Iterator[tuple[str, dict]]:
    """Yield ``(config key, dataset dict)`` for a dataset and the ones that wrappers hold."""
    if 'dataset' in ds:
        yield from _iter_datasets(ds['dataset'], f'{where}.dataset')
    elif 'datasets' in ds:
        for i, sub in enumerate(ds['datasets']):
            yield from _iter_datasets(sub, f'{where}.datasets[{i}]')
    else:
        yield where, ds


def _dataset_class(task: str, type_):
    if not isinstance(type_, str):
        return type_
    from mmengine.registry import DATASETS
    return DATASETS.get(type_ if '.' in type_ else f'{task}.{type_}')


def _is_coco(task: str, ds: dict) -> bool:
    if task != 'mmdet':
        return False
    try:
        from mmdet.datasets import CocoDataset
    except ImportError:
        return False
    cls = _dataset_class(task, ds.get('type'))
    return isinstance(cls, type) and issubclass(cls, CocoDataset)


def _pipeline_loads_masks(ds: dict) -> bool:
    return any(isinstance(t, dict) and t.get('with_mask') for t in ds.get('pipeline') or [])


def _check_dataset(task: str, where: str, ds: dict, deep: bool) -> None:
    backend = (ds.get('backend_args') or {}).get('backend', 'local')
    data_root = ds.get('data_root') or ''
    if backend != 'local' or _is_remote(str(data_root)):
        return
    if data_root and not osp.isdir(data_root):
        raise InputError(
            f'{where}.data_root: {_where(data_root)} does not exist. Expected '
            f'{DATA_HINTS.get(task, "the dataset folder")}. Put (or link) the data there, or point '
            f'the config at it with --cfg-options {where}.data_root=DIR (the evaluator\'s ann_file too).')
    ann_file = ds.get('ann_file') or ''
    ann_path = osp.join(data_root, ann_file) if ann_file else ''
    if ann_path and not osp.isfile(ann_path):
        raise InputError(f'{where}.ann_file: {_where(ann_path)} does not exist (data_root + ann_file). '
                         'Expected the annotation file of this split.')
    prefix = ds.get('data_prefix') or {}
    for key, sub in (prefix.items() if isinstance(prefix, dict) else [('', prefix)]):
        folder = osp.join(data_root, sub) if isinstance(sub, str) and sub else ''
        if folder and not osp.isdir(folder):
            name = f'{where}.data_prefix' + (f'.{key}' if key else '')
            raise InputError(f'{name}: {_where(folder)} does not exist (data_root + data_prefix). '
                             'Expected the folder holding this split\'s files.')
    if deep and ann_path and _is_coco(task, ds):
        classes = (ds.get('metainfo') or {}).get('classes')
        if classes is None:
            classes = _dataset_class(task, ds.get('type')).METAINFO.get('classes')
        validate_coco_instances(ann_path, require_annotations=not ds.get('test_mode', False),
                                require_masks=_pipeline_loads_masks(ds), classes=classes)


def _check_evaluator(where: str, evaluator, deep: bool) -> None:
    for i, metric in enumerate(evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]):
        if not isinstance(metric, dict):
            continue
        name = where if isinstance(evaluator, dict) else f'{where}[{i}]'
        ann_file = metric.get('ann_file')
        if not ann_file or _is_remote(ann_file):
            continue
        if not osp.isfile(ann_file):
            raise InputError(f'{name}.ann_file: {_where(ann_file)} does not exist. Expected the '
                             'ground truth the metric scores against (usually the same file as the '
                             "dataset's data_root + ann_file).")
        if deep and str(metric.get('type', '')).split('.')[-1] == 'CocoMetric':
            validate_coco_instances(ann_file, require_annotations=not metric.get('format_only', False))


def _iter_pretrained(node, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        if node.get('type') == 'Pretrained' and isinstance(node.get('checkpoint'), str):
            yield f'{where}.checkpoint', node['checkpoint']
        for key, value in node.items():
            yield from _iter_pretrained(value, f'{where}.{key}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _iter_pretrained(value, f'{where}[{i}]')


def _check_checkpoint(key: str, path: str, expected: str) -> None:
    if not _is_remote(path) and not osp.isfile(path):
        raise InputError(f'{key}: {_where(path)} does not exist. Expected {expected}.')


def check_run_inputs(cfg, mode: str, checkpoint: str | None = None, deep: bool = True) -> None:
    """Check the data and checkpoint paths a train or test run will read.

    Args:
        cfg (Config): the merged config (after ``--cfg-options``); ``default_scope`` names the task.
        mode (str): 'train' (train and val data, pretrained weights, ``load_from``) or 'test'
            (test data and the checkpoint to evaluate).
        checkpoint (str | None): the checkpoint a test run evaluates. Defaults to None.
        deep (bool): also parse COCO annotation files and check their structure. Defaults to True.

    Raises:
        InputError: a missing folder or file, named with its config key.
        CocoFormatError: an annotation file that is not COCO instances JSON.
    """
    if mode not in ('train', 'test'):
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    task = cfg.get('default_scope')
    if mode == 'train':
        loaders = ['train_dataloader'] + (['val_dataloader'] if cfg.get('val_cfg') else [])
        evaluators = ['val_evaluator'] if cfg.get('val_cfg') else []
    else:
        loaders, evaluators = ['test_dataloader'], ['test_evaluator']
    for name in loaders:
        loader = cfg.get(name)
        if loader and loader.get('dataset'):
            for where, ds in _iter_datasets(loader['dataset'], f'{name}.dataset'):
                _check_dataset(task, where, ds, deep)
    for name in evaluators:
        if cfg.get(name):
            _check_evaluator(name, cfg[name], deep)
    if mode == 'train':
        for key, path in _iter_pretrained(cfg.get('model'), 'model'):
            _check_checkpoint(key, path, 'pretrained weights for this part of the model (for MILA: the '
                              "authors' MLLA_{T,S,B}.pth, or a file converted by tools/convert_checkpoint.py)"
                              f'; pass another path with --cfg-options {key}=PATH')
        if cfg.get('load_from'):
            _check_checkpoint('load_from', cfg.load_from, 'a checkpoint to start from or resume')
    elif checkpoint is not None:
        _check_checkpoint('CHECKPOINT', checkpoint, 'the trained checkpoint to evaluate '
                          '(e.g. work_dirs/<config>/epoch_36.pth)')
