"""The models that benchmarks and FLOP counts build: comparison backbones by name, and a config's
model bound to its ``tensor`` mode."""
from __future__ import annotations

import functools
import inspect
from typing import Callable

import torch.nn as nn

# Name -> (registry, backbone config); dense-prediction backbones returning all four stages.
BACKBONES = {
    'mila-t': ('mmpretrain', dict(type='MILA', arch='tiny')),
    'mila-s': ('mmpretrain', dict(type='MILA', arch='small')),
    'mila-b': ('mmpretrain', dict(type='MILA', arch='base')),
    'swin-t': ('mmpretrain', dict(type='SwinTransformer', arch='tiny', pad_small_map=True)),
    'swin-s': ('mmpretrain', dict(type='SwinTransformer', arch='small', pad_small_map=True)),
    'convnext-t': ('mmpretrain', dict(type='ConvNeXt', arch='tiny', gap_before_final_norm=False)),
    'convnext-s': ('mmpretrain', dict(type='ConvNeXt', arch='small', gap_before_final_norm=False)),
}
LABELS = {'mila-t': 'MILA-T', 'mila-s': 'MILA-S', 'mila-b': 'MILA-B', 'swin-t': 'Swin-T (mmpretrain)',
          'swin-s': 'Swin-S (mmpretrain)', 'convnext-t': 'ConvNeXt-T (mmpretrain)',
          'convnext-s': 'ConvNeXt-S (mmpretrain)'}


def build_backbone(name: str) -> nn.Module:
    """A dense-prediction backbone by name (all four stages out, no stochastic depth)."""
    if name not in BACKBONES:
        raise ValueError(f'unknown model {name!r}; choose from {sorted(BACKBONES)} or pass --config')
    import mmmila  # noqa: F401  (registers MILA)
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    cfg = dict(BACKBONES[name][1], out_indices=(0, 1, 2, 3), drop_path_rate=0.0)
    # mmpretrain's classes, also when an mmdet / mmseg run has set another default scope
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(cfg)


def load_config(path: str, cfg_options: dict | None = None):
    """Read a config (its ``custom_imports`` are imported) and set its default scope."""
    from mmengine.registry import init_default_scope

    from mmmila.utils.cli import load_config as read_config

    cfg = read_config(path, cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    return cfg


def build_model(cfg) -> nn.Module:
    """The config's model in eval mode; no checkpoint is loaded (``init_weights`` is not called)."""
    from mmengine.registry import MODELS

    model = MODELS.build(cfg.model)
    model.eval()  # (some backbones' train() does not return self)
    return model


def dummy_data_samples(model: nn.Module, height: int, width: int, batch: int = 1) -> list | None:
    """``batch`` data samples with the image metadata a detector's tensor mode needs (None for
    models other than detectors and segmentors)."""
    meta = dict(img_shape=(height, width), ori_shape=(height, width), pad_shape=(height, width),
                batch_input_shape=(height, width), scale_factor=(1.0, 1.0))
    try:
        from mmdet.models.detectors import BaseDetector
        from mmdet.structures import DetDataSample
        if isinstance(model, BaseDetector):
            return [DetDataSample(metainfo=meta) for _ in range(batch)]
    except ImportError:
        pass
    try:
        from mmseg.models.segmentors import BaseSegmentor
        from mmseg.structures import SegDataSample
        if isinstance(model, BaseSegmentor):
            return [SegDataSample(metainfo=meta) for _ in range(batch)]
    except ImportError:
        pass
    return None


def tensor_mode(model: nn.Module, height: int, width: int, batch: int = 1) -> nn.Module:
    """Bind ``model.forward`` to its tensor mode with the data samples it needs (in place)."""
    samples = dummy_data_samples(model, height, width, batch)
    forward = type(model).forward.__get__(model)
    if 'mode' in inspect.signature(forward).parameters:
        model.forward = functools.partial(forward, data_samples=samples, mode='tensor')
    return model


def build_from_config(path: str, batch: int = 1) -> Callable[[int], nn.Module]:
    """A factory ``size -> model`` for a config's model in tensor mode."""
    cfg = load_config(path)
    return lambda size: tensor_mode(build_model(cfg), size, size, batch)
