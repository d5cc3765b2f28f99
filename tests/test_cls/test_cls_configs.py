"""configs/mila_{t,s,b}_in1k.py: the paper's recipe, and a train and a test step of each model on CPU."""
from __future__ import annotations

import copy

import pytest
import torch

from ..conftest import REPO, seed_for

# Facts of the authors' ImageNet recipe (docs/recipes.md).
RECIPE = {
    't': dict(arch='tiny', batch=128, drop_path=0.2, mesa=1.0, width=512, top1=83.5),
    's': dict(arch='small', batch=64, drop_path=0.3, mesa=1.5, width=512, top1=84.4),
    'b': dict(arch='base', batch=64, drop_path=0.5, mesa=2.0, width=768, top1=85.3),
}
GPUS = 8


def load(variant):
    from mmengine.config import Config
    return Config.fromfile(str(REPO / 'configs' / f'mila_{variant}_in1k.py'))


@pytest.mark.parametrize('variant', list(RECIPE))
def test_config_states_the_papers_recipe(variant):
    cfg, fact = load(variant), RECIPE[variant]
    total = fact['batch'] * GPUS
    assert cfg.custom_imports.imports == ['mmmila', 'mmmila.distill']
    assert cfg.model.type == 'MESAClassifier' and cfg.model.backbone.type == 'MILA'
    assert cfg.model.backbone.arch == fact['arch'] and cfg.model.backbone.out_indices == (3,)
    assert cfg.model.backbone.drop_path_rate == fact['drop_path']
    assert cfg.model.head.in_channels == fact['width'] and cfg.model.head.num_classes == 1000
    assert cfg.model.mesa_weight == fact['mesa']
    assert cfg.model.head.loss == dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')
    assert cfg.model.train_cfg.augments == [dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]
    # batch, lr 5e-4 x total / 512, AdamW, clipping, schedule
    assert cfg.train_dataloader.batch_size == fact['batch'] and cfg.auto_scale_lr.base_batch_size == total
    opt = cfg.optim_wrapper.optimizer
    assert opt.type == 'AdamW' and opt.lr == pytest.approx(5e-4 * total / 512)
    assert (opt.weight_decay, opt.eps, tuple(opt.betas)) == (0.05, 1e-8, (0.9, 0.999))
    assert cfg.optim_wrapper.clip_grad == dict(max_norm=5.0)
    pw = cfg.optim_wrapper.paramwise_cfg
    assert pw.bias_decay_mult == pw.norm_decay_mult == pw.flat_decay_mult == 0.0
    assert cfg.train_cfg.max_epochs == 300
    warm, cos = cfg.param_scheduler
    assert (warm.type, warm.start_factor, warm.end) == ('LinearLR', 1e-3, 20) and warm.convert_to_iter_based
    assert (cos.type, cos.begin, cos.end, cos.eta_min_ratio) == ('CosineAnnealingLR', 20, 300, 1e-2)
    assert cos.convert_to_iter_based
    # EMA (decay 0.9996 ** (total / 4096)) and self-distillation from 25% of training
    hook, = cfg.custom_hooks
    assert hook.type == 'MESAHook' and hook.start_ratio == 0.25
    assert 1 - hook.momentum == pytest.approx(0.9996 ** (total / 4096), rel=1e-12)
    # augmentation, and evaluation at 224 (short side 256, centre crop)
    train = {t['type']: t for t in cfg.train_dataloader.dataset.pipeline}
    crop = train['RandomResizedCrop']
    assert crop['scale'] == 224 and crop['interpolation'] == 'bicubic'
    ra = train['RandAugment']
    assert (ra.num_policies, ra.magnitude_level, ra.magnitude_std) == (2, 9, 0.5)
    assert ra.policies == 'timm_increasing'
    assert train['RandomErasing']['erase_prob'] == 0.25 and train['RandomErasing']['mode'] == 'rand'
    test = {t['type']: t for t in cfg.test_dataloader.dataset.pipeline}
    assert test['ResizeEdge']['scale'] == 256 and test['ResizeEdge']['edge'] == 'short'
    assert test['CenterCrop']['crop_size'] == 224
    assert cfg.test_evaluator == dict(type='Accuracy', topk=(1, 5))
    assert cfg.data_preprocessor.mean == [123.675, 116.28, 103.53] and cfg.data_preprocessor.to_rgb


def _build(cfg):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    model = MODELS.build(model_cfg)
    model.init_weights()
    return model


def _batch(size=64, n=2):
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(seed_for(0))
    inputs = [torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g) for _ in range(n)]
    samples = [DataSample().set_gt_label(i) for i in range(n)]
    return dict(inputs=inputs, data_samples=samples)


@pytest.mark.parametrize('variant', list(RECIPE))
def test_config_builds_and_runs_a_train_and_a_test_step(variant):
    from mmengine.optim import build_optim_wrapper
    cfg = load(variant)
    model = _build(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == pytest.approx({'t': 24.39e6, 's': 43.02e6, 'b': 95.98e6}[variant], rel=1e-3)
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    # the paper's no-decay rule: 1-D parameters (norms, biases) have weight decay 0
    decays = {p.dim(): g['weight_decay'] for g in optim.optimizer.param_groups for p in g['params']}
    assert decays[1] == 0.0 and decays[2] == 0.05 and decays[4] == 0.05

    before = model.head.fc.weight.detach().clone()
    model.train()
    losses = model.train_step(_batch(), optim)  # Mixup / CutMix, label smoothing, clipping, AdamW
    assert set(losses) == {'loss'} and torch.isfinite(losses['loss'])
    assert not torch.equal(before, model.head.fc.weight)

    model.eval()
    preds = model.test_step(_batch())
    assert len(preds) == 2
    scores = torch.stack([p.pred_score for p in preds])
    assert scores.shape == (2, 1000)
    torch.testing.assert_close(scores.sum(dim=1), torch.ones(2))
