"""Every shipped UperNet config builds, loads the authors' checkpoint format, trains a step and tests.

The real models (MILA-T/S/B with their full heads) run on CPU at a small size: 64x64 crops of the
toy ADE20K set, a batch of 2, then a test pass on one image. Every config's model is also built and
its parameters counted against the paper's (128M for UperNet + MILA-B).
"""
from __future__ import annotations

import gc
import math

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from .conftest import SEG_CONFIGS, point_at, released_state_dict


def small_run_config(variant: str, root, work_dir, checkpoint: str) -> Config:
    cfg = point_at(Config.fromfile(SEG_CONFIGS[variant]), root, num_val=1)
    cfg.model.backbone.init_cfg.checkpoint = checkpoint
    cfg.model.data_preprocessor.size = (64, 64)
    for step in cfg.train_dataloader.dataset.pipeline:
        if step.type == 'RandomResize':
            step.scale = (256, 64)
        elif step.type == 'RandomCrop':
            step.crop_size = (64, 64)
    for step in cfg.test_dataloader.dataset.pipeline:
        if step.type == 'Resize':
            step.scale = (256, 64)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=1)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=-1, save_last=False)
    cfg.default_hooks.logger.interval = 1
    cfg.work_dir = str(work_dir)
    cfg.launcher = 'none'
    return cfg


@pytest.mark.parametrize('variant', sorted(SEG_CONFIGS))
def test_one_training_and_one_test_step(variant, toy_root, tmp_path):
    released = released_state_dict(variant.upper(), seed=1)
    checkpoint = tmp_path / f'MLLA_{variant.upper()}.pth'
    torch.save({'model': released}, checkpoint)
    cfg = small_run_config(variant, toy_root, tmp_path / 'work', str(checkpoint))
    runner = Runner.from_cfg(cfg)
    runner.train()

    loss = runner.message_hub.get_scalar('train/loss').current()
    assert math.isfinite(loss) and loss > 0
    # The first step's learning rate is 6e-5 x 1e-6 (warm-up), so the backbone still holds the
    # checkpoint's weights (a default initialisation draws other values).
    backbone = runner.model.backbone.state_dict()
    for key in ('layers.0.blocks.0.attn.qk.weight', 'layers.3.blocks.0.mlp.fc2.weight',
                'patch_embed.conv1.conv.weight'):
        torch.testing.assert_close(backbone[key], released[key], atol=1e-6, rtol=0)

    metrics = runner.test()
    assert {'aAcc', 'mIoU', 'mAcc'} <= set(metrics)
    assert all(0.0 <= metrics[k] <= 100.0 for k in ('aAcc', 'mIoU', 'mAcc'))
    del runner, released, backbone
    gc.collect()


def test_every_config_builds_with_the_papers_size():
    """Parameters of the whole segmentor (backbone, UPerHead, auxiliary head), in millions."""
    from mmseg.registry import MODELS
    counts = {}
    for variant, path in SEG_CONFIGS.items():
        cfg = Config.fromfile(path)
        cfg.model.backbone.init_cfg = None
        model = MODELS.build(cfg.model)
        counts[variant] = sum(p.numel() for p in model.parameters()) / 1e6
        del model
    assert abs(counts['b'] - 128) < 0.5  # paper: 128M (rounded)
    assert counts['t'] < counts['s'] < counts['b']
    # T and S share the heads (same stage widths): they differ by their backbones only (43.0M - 24.4M
    # with the 1000-class classifier, which the segmentor does not have)
    assert abs((counts['s'] - counts['t']) - (43.015 - 24.392)) < 0.1
