"""The shipped Mask R-CNN configs: the authors' recipe, real-width models, one train and test step each."""
from __future__ import annotations

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from .conftest import DET_CONFIGS, toy_step_config

# (arch, C, drop_path_rate, epochs, lr milestones, checkpoint file) per config, from docs/recipes.md;
# B 3x is mmmila's derivation (B 1x + the 3x changes the authors made for T and S).
RECIPE = {
    't_1x': ('tiny', 64, 0.1, 12, [8, 11], 'MLLA_T.pth'),
    's_1x': ('small', 64, 0.1, 12, [8, 11], 'MLLA_S.pth'),
    'b_1x': ('base', 96, 0.1, 12, [8, 11], 'MLLA_B.pth'),
    't_3x': ('tiny', 64, 0.3, 36, [27, 33], 'MLLA_T.pth'),
    's_3x': ('small', 64, 0.3, 36, [27, 33], 'MLLA_S.pth'),
    'b_3x': ('base', 96, 0.3, 36, [27, 33], 'MLLA_B.pth'),
}


# The default suite steps through the users' main config and the derived one; the others (same
# pipeline, optimizer and heads, other arch / drop-path / schedule) run with `make test-slow`.
STEPPED = [pytest.param(name, marks=() if name in ('t_3x', 'b_3x') else pytest.mark.slow)
           for name in sorted(DET_CONFIGS)]


def test_every_shipped_detection_config_is_covered():
    shipped = {p.name for p in DET_CONFIGS['t_1x'].parent.glob('mask_rcnn_mila_*.py')}
    assert shipped == {p.name for p in DET_CONFIGS.values()}


@pytest.mark.parametrize('name', sorted(DET_CONFIGS))
def test_config_states_the_recipe(name):
    cfg = Config.fromfile(str(DET_CONFIGS[name]))
    arch, c, dpr, epochs, milestones, ckpt = RECIPE[name]
    assert cfg.default_scope == 'mmdet'
    assert cfg.custom_imports == dict(imports=['mmmila'], allow_failed_imports=False)
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.arch, backbone.drop_path_rate) == ('MILA', arch, dpr)
    assert backbone.out_indices == (0, 1, 2, 3) and not backbone.norm_eval and backbone.frozen_stages == -1
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=f'data/{ckpt}')
    assert cfg.model.neck.in_channels == [c, 2 * c, 4 * c, 8 * c]
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.betas, optimizer.weight_decay) == (
        'AdamW', 1e-4, (0.9, 0.999), 0.05)
    assert cfg.optim_wrapper.type == 'OptimWrapper' and 'clip_grad' not in cfg.optim_wrapper
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys == {'norm': {'decay_mult': 0.0}}
    assert cfg.train_cfg.max_epochs == epochs
    warmup, steps = cfg.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.end, warmup.by_epoch) == ('LinearLR', 0.001, 500, False)
    assert (steps.type, steps.milestones, steps.gamma) == ('MultiStepLR', milestones, 0.1)
    assert cfg.train_dataloader.batch_size == 2 and cfg.auto_scale_lr.base_batch_size == 16
    assert cfg.train_dataloader.dataset.data_root == 'data/coco/'
    flip, autoaug = cfg.train_dataloader.dataset.pipeline[2:4]
    assert flip.type == 'RandomFlip' and autoaug.type == 'AutoAugment'
    shorts = [min(s) for s in autoaug.policies[0][0].scales]
    assert shorts == list(range(480, 801, 32)) and all(max(s) == 1333 for s in autoaug.policies[0][0].scales)
    assert [t.type for t in autoaug.policies[1]] == ['RandomChoiceResize', 'RandomCrop', 'RandomChoiceResize']
    assert autoaug.policies[1][1].crop_size == (384, 600)
    assert cfg.test_dataloader.dataset.pipeline[1].scale == (1333, 800)
    assert cfg.test_evaluator.metric == ['bbox', 'segm']


def test_b_3x_says_it_is_derived():
    text = DET_CONFIGS['b_3x'].read_text()
    assert 'DERIVED' in text and 'no MILA-B 3x' in text


@pytest.mark.parametrize('name', STEPPED)
def test_real_width_detector_builds_and_its_neck_fits(name):
    """The config's own widths: backbone maps feed the FPN without a channel mismatch."""
    import mmmila  # noqa: F401
    from mmdet.registry import MODELS
    cfg = Config.fromfile(str(DET_CONFIGS[name]))
    cfg.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model).eval()
    c = RECIPE[name][1]
    with torch.no_grad():
        feats = model.backbone(torch.randn(1, 3, 64, 96))
        assert [f.shape[1] for f in feats] == [c, 2 * c, 4 * c, 8 * c]
        outs = model.neck(feats)
    assert [tuple(o.shape[2:]) for o in outs] == [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
    assert all(o.shape[1] == 256 for o in outs)


@pytest.mark.parametrize('name', STEPPED)
def test_one_train_step_and_one_test_step(name, toy_root, tmp_path):
    """The config's pipeline, optimizer and metric run on CPU (narrow MILA, images 1/8 size)."""
    from mmengine.runner import Runner
    runner = Runner.from_cfg(toy_step_config(DET_CONFIGS[name], toy_root, tmp_path))
    runner.train()
    assert runner.iter == 1
    param_groups = runner.optim_wrapper.optimizer.param_groups
    groups = {id(p): g['weight_decay'] for g in param_groups for p in g['params']}
    params = dict(runner.model.named_parameters())
    # 'norm' parameters (LayerNorms, stem/downsample BatchNorms) get no weight decay, all else 0.05
    for key in ('backbone.norm0.weight', 'backbone.layers.0.blocks.0.norm1.bias',
                'backbone.patch_embed.conv1.norm.weight', 'backbone.layers.0.downsample.conv.2.norm.weight'):
        assert groups[id(params[key])] == 0.0, key
    for key in ('backbone.layers.0.blocks.0.mlp.fc1.bias', 'backbone.layers.0.blocks.0.attn.qk.weight',
                'neck.lateral_convs.0.conv.bias', 'roi_head.mask_head.conv_logits.weight'):
        assert groups[id(params[key])] == 0.05, key
    metrics = runner.test()
    for key in ('coco/bbox_mAP', 'coco/segm_mAP', 'coco/bbox_mAP_50'):
        assert 0.0 <= metrics[key] <= 1.0, (key, metrics[key])
