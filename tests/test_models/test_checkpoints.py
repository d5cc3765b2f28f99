"""Released checkpoints (MLLA_{T,S,B}.pth format) load strictly through init_cfg, or fail loudly."""
from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
import torch

from mmmila.checkpoint import CheckpointMismatchError, authors_to_mmmila, mmmila_to_authors
from mmmila.models import MILA

from ..conftest import AUTHORS_KEYS, REPO, TINY_ARCH, seed_for

VARIANTS = {'tiny': 'MILA-T', 'small': 'MILA-S', 'base': 'MILA-B'}


def released_state_dict(variant: str) -> dict:
    """A state dict of the released format, shapes from authors_keys.json, random values."""
    shapes = json.loads(AUTHORS_KEYS.read_text())[variant]
    g = torch.Generator().manual_seed(seed_for(0))
    return {k: (torch.tensor(7) if not s else torch.randn(s, generator=g)) for k, s in shapes.items()}


def save_released(tmp_path, variant: str, name: str = 'MLLA.pth', **extra) -> tuple[str, dict]:
    sd = released_state_dict(variant)
    path = tmp_path / name
    torch.save({'model': sd, **extra}, path)
    return str(path), sd


@pytest.mark.parametrize('arch', list(VARIANTS))
def test_released_checkpoint_loads_for_classification_and_dense(tmp_path, arch, caplog):
    path, sd = save_released(tmp_path, VARIANTS[arch])
    cls = MILA(arch=arch, out_indices=(3,), init_cfg=dict(type='Pretrained', checkpoint=path))
    cls.init_weights()
    torch.testing.assert_close(cls.norm3.weight, sd['norm.weight'])
    torch.testing.assert_close(cls.layers[2].blocks[1].attn.qk.weight, sd['layers.2.blocks.1.attn.qk.weight'])

    dense = MILA(arch=arch, out_indices=(0, 1, 2, 3), init_cfg=dict(type='Pretrained', checkpoint=path))
    from mmengine.logging import MMLogger
    logger = MMLogger.get_instance('mmmila_test_ckpt', log_level='INFO')
    caplog.set_level(logging.INFO)
    from mmmila.checkpoint import load_pretrained_backbone
    messages = []
    logger.info = messages.append  # capture the one summary line
    load_pretrained_backbone(dense, dense.init_cfg, logger)
    torch.testing.assert_close(dense.patch_embed.conv1.conv.weight, sd['patch_embed.conv1.conv.weight'])
    # fresh output norms (LayerNorm init), classifier norm not used
    assert torch.equal(dense.norm3.weight, torch.ones_like(dense.norm3.weight))
    assert len(messages) == 1
    line = messages[0]
    assert 'RoPE table' in line and 'classification head' in line and 'norm0.weight' in line


def test_wrong_variant_names_keys(tmp_path):
    path, _ = save_released(tmp_path, 'MILA-S')
    model = MILA(arch='tiny', out_indices=(0, 1, 2, 3), init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(CheckpointMismatchError, match=r'keys not in the model: layers\.0\.blocks\.2'):
        model.init_weights()
    path_b, _ = save_released(tmp_path, 'MILA-B', 'b.pth')
    model = MILA(arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=path_b))
    with pytest.raises(CheckpointMismatchError, match=r'shape mismatch.*\(48, 3, 3, 3\) vs \(32, 3, 3, 3\)'):
        model.init_weights()


def test_foreign_keys_and_missing_keys(tmp_path):
    sd = released_state_dict('MILA-T')
    sd['layers.0.blocks.0.attn.v.weight'] = torch.zeros(64, 64)
    torch.save({'model': sd}, tmp_path / 'foreign.pth')
    model = MILA(arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'foreign.pth')))
    with pytest.raises(CheckpointMismatchError, match='attn.v.weight'):
        model.init_weights()
    del sd['layers.0.blocks.0.attn.v.weight'], sd['layers.1.blocks.0.mlp.fc1.weight']
    torch.save({'model': sd}, tmp_path / 'missing.pth')
    model = MILA(arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'missing.pth')))
    with pytest.raises(CheckpointMismatchError, match=r'missing from the checkpoint: layers\.1\.blocks\.0\.mlp\.fc1'):
        model.init_weights()


def test_truncated_file_fails_naming_it(tmp_path):
    path, _ = save_released(tmp_path, 'MILA-T')
    data = open(path, 'rb').read()
    bad = tmp_path / 'truncated.pth'
    bad.write_bytes(data[: len(data) // 2])
    model = MILA(arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=str(bad)))
    with pytest.raises(Exception, match='truncated.pth'):
        model.init_weights()


def test_converter_round_trip(authors_fixture, tmp_path):
    def convert_main(args):
        return subprocess.run([sys.executable, str(REPO / 'tools' / 'convert_checkpoint.py'), *args],
                              capture_output=True, text=True, timeout=600).returncode

    src = tmp_path / 'authors.pth'
    torch.save(authors_fixture['checkpoint'], src)
    assert convert_main([str(src), str(tmp_path / 'ours.pth')]) == 0
    assert convert_main([str(src), str(tmp_path / 'ours.pth')]) == 1  # never overwrites
    ours = torch.load(tmp_path / 'ours.pth', weights_only=True)['state_dict']
    assert 'head.fc.weight' in ours and 'backbone.norm3.weight' in ours
    assert not any(k.endswith('rope.rotations') for k in ours)
    # own format loads into the backbone too, norm3 included
    model = MILA(arch=TINY_ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'ours.pth')))
    model.init_weights()
    torch.testing.assert_close(model.norm3.bias, authors_fixture['checkpoint']['model']['norm.bias'])
    assert convert_main([str(tmp_path / 'ours.pth'), str(tmp_path / 'back.pth'), '--to', 'authors',
                         '--img-size', '64']) == 0
    back = torch.load(tmp_path / 'back.pth', weights_only=True)['model']
    orig = authors_fixture['checkpoint']['model']
    assert set(back) == set(orig)
    for k in orig:
        torch.testing.assert_close(back[k], orig[k], atol=1e-6, rtol=0)  # rope tables recomputed


def test_conversion_key_sets_match_models():
    """Converted authors_keys.json keys == the mmpretrain classifier's keys, for T/S/B."""
    for arch, variant in VARIANTS.items():
        shapes = json.loads(AUTHORS_KEYS.read_text())[variant]
        converted = authors_to_mmmila({k: torch.empty(s) for k, s in shapes.items()})
        model = MILA(arch=arch, out_indices=(3,))
        ours = {'backbone.' + k for k in model.state_dict()} | {'head.fc.weight', 'head.fc.bias'}
        assert set(converted) == ours, arch
        back = mmmila_to_authors(converted)
        assert {k: list(v.shape) for k, v in back.items()} == shapes, arch
