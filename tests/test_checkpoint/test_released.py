"""The authors' released/training checkpoints: read without running their objects, converted on the fly."""
from __future__ import annotations

import sys
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
from mmengine.runner import load_checkpoint
from mmengine.runner.checkpoint import _load_checkpoint, _load_checkpoint_to_model

import mmmila.integration
from mmmila.checkpoint import load_checkpoint_file
from mmmila.models import MILA

from ..conftest import TINY_ARCH
from .helpers import released_training_checkpoint


@pytest.fixture
def training_file(tmp_path, authors_fixture):
    """The fixture's weights in the authors' training-file layout, with a yacs config object."""
    pytest.importorskip('yacs.config')
    path = tmp_path / 'ckpt_epoch_299.pth'
    torch.save(released_training_checkpoint(authors_fixture['checkpoint']['model']), path)
    return path


@pytest.fixture
def log_lines(monkeypatch):
    lines = []
    monkeypatch.setattr(mmmila.integration, 'print_log', lambda msg, *args, **kwargs: lines.append(msg))
    return lines


def tiny_classifier():
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    cfg = dict(type='ImageClassifier',
               backbone=dict(type='MILA', arch=TINY_ARCH, out_indices=(3,), drop_path_rate=0.0),
               neck=dict(type='GlobalAveragePooling'),
               head=dict(type='LinearClsHead', num_classes=10, in_channels=256))
    with DefaultScope.overwrite_default_scope('mmpretrain'):  # other tests may leave another scope current
        return MODELS.build(cfg).eval()


def logits(model, x):
    with torch.no_grad():
        return model.head(model.neck(model.backbone(x)))


def test_training_file_read_without_yacs(training_file, monkeypatch):
    monkeypatch.setitem(sys.modules, 'yacs.config', None)  # importing yacs now fails: none of it may run
    monkeypatch.setitem(sys.modules, 'yacs', None)
    ckpt = load_checkpoint_file(str(training_file))
    config = ckpt['config']
    assert type(config) is OrderedDict and type(config['MODEL']['MLLA']) is OrderedDict
    assert config['MODEL']['MLLA']['DEPTHS'] == [1, 1, 2, 1] and config['TRAIN']['EPOCHS'] == 300
    assert ckpt['epoch'] == 299 and ckpt['optimizer']['state'][0]['exp_avg'].shape == \
        ckpt['model']['patch_embed.conv1.conv.weight'].shape


def test_training_file_loads_through_backbone_init_cfg(training_file, authors_fixture):
    init_cfg = dict(type='Pretrained', checkpoint=str(training_file))
    model = MILA(arch=TINY_ARCH, out_indices=(3,), init_cfg=init_cfg)
    model.init_weights()
    sd = authors_fixture['checkpoint']['model']
    key = 'layers.2.blocks.1.attn.qk.weight'
    torch.testing.assert_close(model.layers[2].blocks[1].attn.qk.weight, sd[key])
    torch.testing.assert_close(model.norm3.weight, sd['norm.weight'])


def test_released_file_converted_for_classifier(tmp_path, authors_fixture, log_lines):
    path = tmp_path / 'MLLA_tiny.pth'
    torch.save(authors_fixture['checkpoint'], path)
    model = tiny_classifier()
    before = logits(model, authors_fixture['x_cls'])
    load_checkpoint(model, str(path), map_location='cpu', strict=True)
    out = logits(model, authors_fixture['x_cls'])
    torch.testing.assert_close(out, authors_fixture['logits'], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(before, authors_fixture['logits'], atol=1e-2)
    converted = [line for line in log_lines if "authors' format" in line]
    assert len(converted) == 1 and 'ImageClassifier' in converted[0]


def test_training_file_converted_through_inferencer_path(training_file, authors_fixture, log_lines):
    """DetInferencer/MMSegInferencer style: _load_checkpoint, then _load_checkpoint_to_model."""
    model = tiny_classifier()
    _load_checkpoint_to_model(model, _load_checkpoint(str(training_file), map_location='cpu'), strict=True)
    torch.testing.assert_close(logits(model, authors_fixture['x_cls']), authors_fixture['logits'],
                               rtol=1e-5, atol=1e-5)
    assert sum("authors' format" in line for line in log_lines) == 1


def test_other_models_and_formats_untouched(tmp_path, authors_fixture, log_lines):
    path = tmp_path / 'MLLA_tiny.pth'
    torch.save(authors_fixture['checkpoint'], path)

    class NotMILA(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Linear(2, 2)

    load_checkpoint(NotMILA(), str(path))  # strict=False: mmengine only reports the foreign keys
    assert not any("authors' format" in line for line in log_lines)
    model = tiny_classifier()
    own = tmp_path / 'own.pth'
    torch.save({'state_dict': model.state_dict()}, own)
    load_checkpoint(tiny_classifier(), str(own), strict=True)
    assert not any("authors' format" in line for line in log_lines)


def test_released_file_for_dense_backbone_keeps_fresh_norms(tmp_path, authors_fixture, log_lines):
    """As with init_cfg Pretrained: the classifier's norm and head are not used, norm0-norm3 stay fresh."""
    path = tmp_path / 'MLLA_tiny.pth'
    torch.save(authors_fixture['checkpoint'], path)

    class Detector(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = MILA(arch=TINY_ARCH, out_indices=(0, 1, 2, 3))
            self.neck = nn.Conv2d(256, 8, 1)

    model = Detector()
    load_checkpoint(model, str(path))
    sd = authors_fixture['checkpoint']['model']
    stem = model.backbone.patch_embed.conv1.conv.weight
    torch.testing.assert_close(stem, sd['patch_embed.conv1.conv.weight'])
    assert torch.equal(model.backbone.norm3.weight, torch.ones_like(model.backbone.norm3.weight))
    assert sum("authors' format" in line and 'Detector' in line for line in log_lines) == 1


def test_released_file_through_runner_with_ema_hook(tmp_path, authors_fixture, log_lines):
    """``tools/test.sh CONFIG MLLA_T.pth`` with an EMA hook: the hook reads the checkpoint's state_dict."""
    from mmengine.runner import Runner
    path = tmp_path / 'MLLA_tiny.pth'
    torch.save(authors_fixture['checkpoint'], path)
    runner = Runner(model=tiny_classifier(), work_dir=str(tmp_path / 'work'), load_from=str(path),
                    custom_hooks=[dict(type='EMAHook')])
    runner.call_hook('before_run')  # as Runner.test() does before loading
    runner.load_or_resume()
    ema = next(hook for hook in runner.hooks if type(hook).__name__ == 'EMAHook')
    for model in (runner.model, ema.ema_model.module):
        out = logits(model.eval(), authors_fixture['x_cls'])
        torch.testing.assert_close(out, authors_fixture['logits'], rtol=1e-5, atol=1e-5)
    assert sum("authors' format" in line for line in log_lines) == 1
