"""The EMA self-distillation ("MESA"): MESAClassifier's loss term and MESAHook's schedule."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from ..conftest import TINY_ARCH
from .conftest import tiny_config


def build_classifier(mesa_weight=1.5, num_classes=10):
    import mmmila.distill  # noqa: F401  (registers MESAClassifier)
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    return MODELS.build(dict(
        type='MESAClassifier', mesa_weight=mesa_weight,
        backbone=dict(type='MILA', arch=TINY_ARCH, drop_path_rate=0.0),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=256,
                  loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'))))


def samples(n, num_classes=10):
    from mmpretrain.structures import DataSample
    return [DataSample().set_gt_label(i % num_classes) for i in range(n)]


def test_soft_target_cross_entropy_matches_its_definition():
    from mmmila.distill.mesa_classifier import soft_target_cross_entropy
    logits = torch.randn(4, 7)
    target = torch.softmax(torch.randn(4, 7), dim=-1)
    expected = -(target * torch.log(torch.softmax(logits, -1))).sum(-1).mean()
    torch.testing.assert_close(soft_target_cross_entropy(logits, target), expected)
    # one-hot targets reduce it to the ordinary cross-entropy
    onehot = F.one_hot(torch.tensor([1, 0, 6, 3]), 7).float()
    torch.testing.assert_close(soft_target_cross_entropy(logits, onehot),
                               F.cross_entropy(logits, torch.tensor([1, 0, 6, 3])))
    with pytest.raises(ValueError, match=r'\(4, 7\).*\(4, 6\)'):
        soft_target_cross_entropy(logits, target[:, :6])


def test_inactive_loss_is_the_plain_classifier_loss():
    model = build_classifier()
    x = torch.randn(2, 3, 64, 64)
    losses = model.loss(x, samples(2))
    assert set(losses) == {'loss'}
    expected = model.head.loss(model.extract_feat(x), samples(2))['loss']
    torch.testing.assert_close(losses['loss'], expected)


def test_active_loss_adds_weighted_ce_to_the_teachers_softmax():
    model = build_classifier(mesa_weight=1.5)
    teacher = copy.deepcopy(model)
    with torch.no_grad():  # a teacher that differs from the student
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    teacher.train()
    bn_stats = teacher.backbone.patch_embed.conv1.norm.running_mean.clone()
    model.set_mesa_teacher(teacher)
    model.mesa_active = True
    x = torch.randn(2, 3, 64, 64)
    losses = model.loss(x, samples(2))
    assert set(losses) == {'loss', 'loss_mesa'}

    teacher.eval()
    with torch.no_grad():
        target = teacher(x, mode='tensor').softmax(-1)
    logits = model(x, mode='tensor')
    expected = 1.5 * -(target * logits.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(losses['loss_mesa'], expected)
    # the teacher ran in eval mode (BatchNorm statistics untouched) and gets no gradient
    assert torch.equal(teacher.backbone.patch_embed.conv1.norm.running_mean, bn_stats)
    (losses['loss'] + losses['loss_mesa']).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert model.head.fc.weight.grad is not None


def test_teacher_is_not_part_of_the_model():
    model = build_classifier()
    keys = set(model.state_dict())
    teacher = build_classifier()
    model.set_mesa_teacher(teacher)
    assert set(model.state_dict()) == keys
    assert all(m is not teacher for m in model.modules())
    clone = copy.deepcopy(model)  # e.g. the EMA copy: it never carries (or copies) a teacher
    assert clone.mesa_teacher is None and model.mesa_teacher is teacher
    with pytest.raises(ValueError, match='separate'):
        model.set_mesa_teacher(model)


def test_bad_inputs_fail_clearly():
    from mmmila.distill import MESAHook
    with pytest.raises(ValueError, match='mesa_weight must be >= 0'):
        build_classifier(mesa_weight=-1.0)
    model = build_classifier()
    model.mesa_active = True
    with pytest.raises(RuntimeError, match='no teacher is attached'):
        model.loss(torch.randn(1, 3, 64, 64), samples(1))
    with pytest.raises(ValueError, match='start_ratio'):
        MESAHook(start_ratio=1.5)
    with pytest.raises(ValueError, match='momentum'):
        MESAHook(momentum=0.0)
    hook = MESAHook()
    with pytest.raises(TypeError, match='set_mesa_teacher.*Linear'):
        hook.before_run(SimpleNamespace(model=torch.nn.Linear(2, 2)))


def test_hook_switches_on_at_the_fraction_of_an_iteration_based_run():
    from mmmila.distill import MESAHook
    model = build_classifier()
    hook = MESAHook(start_ratio=0.25)
    runner = SimpleNamespace(model=model, train_loop=SimpleNamespace(max_iters=100, max_epochs=1),
                             max_iters=100, iter=0, epoch=0)
    hook.before_run(runner)
    assert model.mesa_teacher is hook.ema_model.module and not model.mesa_teacher.training
    hook.before_train(runner)
    seen = []
    for it in (0, 24, 25, 99):
        runner.iter = it
        hook.before_train_iter(runner, it)
        seen.append(model.mesa_active)
    assert seen == [False, False, True, True]
    hook.after_train(runner)
    assert model.mesa_active is False


def _loss_recorder():
    """A hook recording, per training iteration, (epoch, loss keys of the outputs)."""
    from mmengine.hooks import Hook

    class RecordLosses(Hook):
        def __init__(self):
            self.seen = []

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            self.seen.append((runner.epoch, tuple(sorted(outputs))))

    return RecordLosses()


def test_runner_trains_the_config_with_ema_and_distillation_from_a_quarter(tmp_path, tiny_imagenet):
    from mmengine.config import Config
    from mmengine.runner import Runner
    extra = """
train_cfg = dict(max_epochs=4, val_interval=4)
param_scheduler = [dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=1,
                        convert_to_iter_based=True)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=4))
"""
    cfg = Config.fromfile(str(tiny_config(tmp_path, 't', tiny_imagenet, extra, small_images=True)))
    runner = Runner.from_cfg(cfg)
    recorder = _loss_recorder()
    runner.register_hook(recorder, priority='LOWEST')
    runner.train()
    epochs = {e: keys for e, keys in recorder.seen}
    # 6 images, batch 2: 3 iterations per epoch; the term is on from epoch int(0.25 * 4) = 1
    assert len(recorder.seen) == 12
    assert 'loss_mesa' not in epochs[0] and all('loss_mesa' in epochs[e] for e in (1, 2, 3))
    hook = next(h for h in runner.hooks if type(h).__name__ == 'MESAHook')
    model = runner.model
    assert model.mesa_teacher is hook.ema_model.module and model.mesa_active is False
    # the EMA weights moved away from the model's (momentum 1e-4 over 11 updates)
    w, w_ema = model.head.fc.weight, hook.ema_model.module.head.fc.weight
    assert not torch.equal(w, w_ema)
    assert runner.message_hub.get_scalar('train/loss_mesa').current() > 0
    ckpt = torch.load(tmp_path / 'work' / 'epoch_4.pth', map_location='cpu', weights_only=False)
    assert 'ema_state_dict' in ckpt and not any('teacher' in k for k in ckpt['state_dict'])
