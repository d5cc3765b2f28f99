"""The shipped UperNet configs hold the paper's ADE20K recipe (docs/recipes.md) and mmmila's T/S choices."""
from __future__ import annotations

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import PARAM_SCHEDULERS
from mmseg.registry import MODELS

from .conftest import SEG_CONFIGS, TOY_CONFIG

WIDTHS = {'t': [64, 128, 256, 512], 's': [64, 128, 256, 512], 'b': [96, 192, 384, 768]}
ARCH = {'t': 'tiny', 's': 'small', 'b': 'base'}
DROP_PATH = {'t': 0.2, 's': 0.3, 'b': 0.5}  # B: the authors'; T, S: mmmila's rule (= ImageNet rate)


@pytest.fixture(scope='module', params=sorted(SEG_CONFIGS))
def variant_cfg(request):
    return request.param, Config.fromfile(SEG_CONFIGS[request.param])


def test_model(variant_cfg):
    v, cfg = variant_cfg
    model = cfg.model
    assert model.type == 'EncoderDecoder' and cfg.default_scope == 'mmseg'
    assert 'mmmila' in cfg.custom_imports.imports
    bb = model.backbone
    assert (bb.type, bb.arch, bb.drop_path_rate) == ('MILA', ARCH[v], DROP_PATH[v])
    assert tuple(bb.out_indices) == (0, 1, 2, 3)
    assert (bb.frozen_stages, bb.norm_eval) == (-1, False)
    assert bb.init_cfg == dict(type='Pretrained', checkpoint=f'data/MLLA_{v.upper()}.pth')
    head, aux = model.decode_head, model.auxiliary_head
    assert (head.type, head.in_channels, list(head.in_index)) == ('UPerHead', WIDTHS[v], [0, 1, 2, 3])
    assert (tuple(head.pool_scales), head.channels, head.dropout_ratio) == ((1, 2, 3, 6), 512, 0.1)
    assert (aux.type, aux.in_channels, aux.in_index) == ('FCNHead', WIDTHS[v][2], 2)
    assert (aux.channels, aux.num_convs) == (256, 1)
    assert (aux.dropout_ratio, aux.concat_input) == (0.1, False)
    for h, weight in ((head, 1.0), (aux, 0.4)):
        assert h.num_classes == 150 and h.norm_cfg.type == 'SyncBN' and h.align_corners is False
        assert (h.loss_decode.type, h.loss_decode.loss_weight) == ('CrossEntropyLoss', weight)
    assert model.test_cfg.mode == 'whole'
    pre = model.data_preprocessor
    assert (pre.mean, pre.std, pre.bgr_to_rgb) == ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375], True)
    assert (tuple(pre.size), pre.seg_pad_val) == ((512, 512), 255)


def test_optimisation(variant_cfg):
    _, cfg = variant_cfg
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, tuple(opt.betas), opt.weight_decay) == ('AdamW', 6e-5, (0.9, 0.999), 0.01)
    assert 'momentum' not in opt  # the SGD base is replaced, not merged
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys == {'norm': dict(decay_mult=0.0)}
    assert cfg.optim_wrapper.get('clip_grad') is None and cfg.optim_wrapper.type == 'OptimWrapper'
    assert cfg.train_cfg.type == 'IterBasedTrainLoop'
    assert (cfg.train_cfg.max_iters, cfg.train_cfg.val_interval) == (160000, 16000)
    assert cfg.default_hooks.checkpoint.interval == 16000
    warmup, poly = cfg.param_scheduler
    # mmengine's schedulers finish after end - begin - 1 steps: 1500 warm-up steps, 160k poly steps
    assert (warmup.type, warmup.start_factor, warmup.begin, warmup.end) == ('LinearLR', 1e-6, 0, 1501)
    assert (poly.type, poly.power, poly.eta_min, poly.begin, poly.end) == ('PolyLR', 1.0, 0.0, 0, 160001)
    assert cfg.train_dataloader.batch_size == 2 and cfg.auto_scale_lr.base_batch_size == 16


def test_data(variant_cfg):
    _, cfg = variant_cfg
    train, val = cfg.train_dataloader.dataset, cfg.test_dataloader.dataset
    for ds in (train, val):
        assert (ds.type, ds.data_root) == ('ADE20KCheckedDataset', 'data/ade/ADEChallengeData2016')
    assert train.data_prefix == dict(img_path='images/training', seg_map_path='annotations/training')
    assert val.data_prefix == dict(img_path='images/validation', seg_map_path='annotations/validation')
    steps = {t.type: t for t in train.pipeline}
    assert list(steps) == ['LoadImageFromFile', 'LoadCheckedSegAnnotations', 'RandomResize', 'RandomCrop',
                           'RandomFlip', 'PhotoMetricDistortion', 'PackSegInputs']
    resize = steps['RandomResize']
    assert (tuple(resize.scale), tuple(resize.ratio_range)) == ((2048, 512), (0.5, 2.0))
    assert (tuple(steps['RandomCrop'].crop_size), steps['RandomCrop'].cat_max_ratio) == ((512, 512), 0.75)
    assert steps['LoadCheckedSegAnnotations'].num_classes == 150
    resize = [t for t in val.pipeline if t.type == 'Resize']
    assert len(resize) == 1 and tuple(resize[0].scale) == (2048, 512) and resize[0].keep_ratio
    assert 'RandomFlip' not in [t.type for t in val.pipeline]
    assert cfg.test_evaluator == dict(type='IoUMetric', iou_metrics=['mIoU'])


def test_multi_scale_test(variant_cfg):
    """--tta: 2048x512 times 0.5 ... 1.75, each with and without a horizontal flip."""
    _, cfg = variant_cfg
    assert cfg.tta_model.type == 'SegTTAModel'
    load, tta = cfg.tta_pipeline
    assert load.type == 'LoadImageFromFile' and tta.type == 'TestTimeAug'
    scales, flips, labels, pack = tta.transforms
    assert [tuple(t.scale) for t in scales] == [(1024, 256), (1536, 384), (2048, 512), (2560, 640),
                                               (3072, 768), (3584, 896)]
    assert all(t.keep_ratio for t in scales)
    assert [(t.type, t.prob) for t in flips] == [('RandomFlip', 0.0), ('RandomFlip', 1.0)]
    assert [t.type for t in labels + pack] == ['LoadCheckedSegAnnotations', 'PackSegInputs']


def mmcv_poly_with_warmup(step, base_lr, max_iters, warmup_iters, warmup_ratio):
    """The learning rate of mmcv 1.x's lr_config(policy='poly', power=1, min_lr=0, warmup='linear')."""
    regular = base_lr * (1 - step / max_iters)
    if step >= warmup_iters:
        return regular
    return regular * (1 - (1 - step / warmup_iters) * (1 - warmup_ratio))


@pytest.mark.parametrize('scale', [1, 100])
def test_schedule_matches_the_authors_mmcv_schedule(scale):
    """The config's two schedulers give mmcv 1.x's warm-up x poly learning rate at every step.

    scale=1 steps through the warm-up and beyond of the real 160k schedule; scale=100 runs a whole
    schedule shrunk 100x (1600 iterations, 15 of warm-up) to its end.
    """
    cfg = Config.fromfile(SEG_CONFIGS['t'])
    base_lr, total = cfg.optim_wrapper.optimizer.lr, cfg.train_cfg.max_iters // scale
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=base_lr)
    schedulers = []
    for sched in cfg.param_scheduler:
        sched = dict(sched, optimizer=optimizer, end=(sched.end - 1) // scale + 1)
        schedulers.append(PARAM_SCHEDULERS.build(sched))
    warmup = (cfg.param_scheduler[0].end - 1) // scale
    steps = total if scale > 1 else 3 * warmup
    worst = 0.0
    for step in range(steps):
        lr = optimizer.param_groups[0]['lr']
        worst = max(worst, abs(lr - mmcv_poly_with_warmup(step, base_lr, total, warmup, 1e-6)) / base_lr)
        optimizer.step()
        for s in schedulers:
            s.step()
    assert worst < 1e-6
    if scale > 1:
        assert optimizer.param_groups[0]['lr'] < base_lr * 1e-3  # decayed to ~0 at the end


def test_weight_decay_groups():
    """No decay on the backbone's norms (LayerNorms and stem/downsample BatchNorms), decay elsewhere."""
    cfg = Config.fromfile(SEG_CONFIGS['t'])
    cfg.model.backbone.init_cfg = None
    for head in ('decode_head', 'auxiliary_head'):
        cfg.model[head].norm_cfg = dict(type='BN', requires_grad=True)
    model = MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {}
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            decay[id(p)] = group['weight_decay']
    names = dict(model.named_parameters())
    no_decay = {n for n, p in names.items() if decay[id(p)] == 0.0}
    assert no_decay == {n for n in names if 'norm' in n}
    assert 'backbone.patch_embed.conv1.norm.weight' in no_decay  # a stem BatchNorm
    assert 'backbone.layers.2.blocks.0.norm1.bias' in no_decay and 'backbone.norm3.weight' in no_decay
    for name in ('decode_head.bottleneck.bn.weight', 'backbone.layers.0.blocks.0.attn.qk.bias',
                 'decode_head.conv_seg.weight'):
        assert decay[id(names[name])] == 0.01


def test_toy_config_is_the_real_recipe_at_toy_scale():
    real, toy = Config.fromfile(SEG_CONFIGS['t']), Config.fromfile(TOY_CONFIG)
    for key in ('type', 'betas', 'weight_decay'):
        assert toy.optim_wrapper.optimizer[key] == real.optim_wrapper.optimizer[key]
    assert toy.optim_wrapper.paramwise_cfg == real.optim_wrapper.paramwise_cfg
    assert toy.test_evaluator == real.test_evaluator and toy.tta_model == real.tta_model
    for loader in ('train_dataloader', 'test_dataloader'):
        assert toy[loader].dataset.type == real[loader].dataset.type
        real_steps = [t.type for t in real[loader].dataset.pipeline if t.type != 'PhotoMetricDistortion']
        assert [t.type for t in toy[loader].dataset.pipeline] == real_steps
    assert [t.type for t in toy.model.values() if isinstance(t, dict) and 'type' in t] == \
        [t.type for t in real.model.values() if isinstance(t, dict) and 'type' in t]
    assert toy.model.backbone.init_cfg is None and toy.train_cfg.max_iters == 300
