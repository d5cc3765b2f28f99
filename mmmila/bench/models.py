"""The models that benchmarks, the GPU kit and FLOP counts build: the one set of comparison backbones
by name (from mmpretrain or timm), and a config's model bound to its ``tensor`` mode."""
from __future__ import annotations

import functools
import inspect
from typing import Callable

import torch.nn as nn

# The one set of backbones that benchmarks and the GPU kit compare: name -> (label, mmpretrain config,
# timm model). Dense-prediction backbones returning all four stages. mmpretrain's classes are the
# benchmarks' (tools/benchmark.py); timm's are the GPU kit's (the GPU image has timm, not mmpretrain).
BACKBONES = {
    'mila-t': ('MILA-T', dict(type='MILA', arch='tiny'), None),
    'mila-s': ('MILA-S', dict(type='MILA', arch='small'), None),
    'mila-b': ('MILA-B', dict(type='MILA', arch='base'), None),
    'swin-t': ('Swin-T', dict(type='SwinTransformer', arch='tiny', pad_small_map=True),
               'swin_tiny_patch4_window7_224'),
    'swin-s': ('Swin-S', dict(type='SwinTransformer', arch='small', pad_small_map=True),
               'swin_small_patch4_window7_224'),
    'convnext-t': ('ConvNeXt-T', dict(type='ConvNeXt', arch='tiny', gap_before_final_norm=False),
                   'convnext_tiny'),
    'convnext-s': ('ConvNeXt-S', dict(type='ConvNeXt', arch='small', gap_before_final_norm=False),
                   'convnext_small'),
}
SOURCES = ('mmpretrain', 'timm')


def label(name: str, source: str = 'mmpretrain') -> str:
    """The display name of a backbone: 'MILA-T', 'Swin-T (mmpretrain)', 'Swin-T (timm)'."""
    text, _, _ = BACKBONES[name]
    return text if name.startswith('mila') else f'{text} ({source})'


LABELS = {name: label(name) for name in BACKBONES}


def build_backbone(name: str, source: str = 'mmpretrain',
                   image_size: tuple[int, int] | None = None, backend: str | None = None) -> nn.Module:
    """A dense-prediction backbone by name: all four stages out, no stochastic depth, random weights.

    Args:
        name (str): a key of :data:`BACKBONES`.
        source (str): 'mmpretrain' (its registry's class; MILA from mmmila) or 'timm'
            (``timm.create_model(..., features_only=True)``; not for MILA).
        image_size (tuple): (H, W) of the input, for timm's Swin, whose window layout is fixed
            when it is built (default: 224 x 224).
        backend (str, optional): MILA's ``attn_backend`` (default: the model's, 'auto').
    """
    if name not in BACKBONES:
        raise ValueError(f'unknown model {name!r}; choose from {sorted(BACKBONES)} or pass --config')
    if source not in SOURCES:
        raise ValueError(f'unknown source {source!r}; choose from {SOURCES}')
    _, cfg, timm_name = BACKBONES[name]
    if source == 'timm':
        if timm_name is None:
            raise ValueError(f'{name} has no timm model; build it from mmpretrain\'s registry')
        import timm
        kwargs = dict(img_size=image_size) if image_size is not None and 'swin' in timm_name else {}
        return timm.create_model(timm_name, pretrained=False, features_only=True, **kwargs)
    import mmmila  # noqa: F401  (registers MILA)
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    cfg = dict(cfg, out_indices=(0, 1, 2, 3), drop_path_rate=0.0)
    if backend is not None:
        if not name.startswith('mila'):
            raise ValueError(f'backend is an option of MILA, not of {name}')
        cfg['attn_backend'] = backend
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
