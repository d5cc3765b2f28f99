"""MILA reproduces the authors' implementation (tests/data/mila_authors_tiny.pt) to round-off."""
from __future__ import annotations

import torch
import torch.nn as nn

from mmmila.bench.errors import rel_err
from mmmila.checkpoint import backbone_weights, check_and_load
from mmmila.models import MILA

from ..conftest import TINY_ARCH

TOL = 1e-5


def build(authors_fixture, out_indices):
    model = MILA(arch=TINY_ARCH, out_indices=out_indices, drop_path_rate=0.0)
    weights, ignored = backbone_weights(authors_fixture['checkpoint']['model'], model.out_indices)
    fresh = check_and_load(model, weights, 'fixture')
    return model.eval(), ignored, fresh


def test_classifier_logits(authors_fixture):
    model, ignored, fresh = build(authors_fixture, (3,))
    sd = authors_fixture['checkpoint']['model']
    # The allow-list is exact: rope buffers and the head; norm goes to norm3, nothing is fresh.
    assert fresh == []
    assert set(ignored) == {k for k in sd if k.endswith('.attn.rope.rotations') or k.startswith('head.')}
    head = nn.Linear(model.embed_dims[3], 10)
    head.load_state_dict({'weight': sd['head.weight'], 'bias': sd['head.bias']})
    with torch.no_grad():
        feat = model(authors_fixture['x_cls'])[0]
        logits = head(feat.mean(dim=(2, 3)))
    assert rel_err(logits, authors_fixture['logits']) <= TOL


def _check_dense(authors_fixture, x, expected):
    model, ignored, fresh = build(authors_fixture, (0, 1, 2, 3))
    assert sorted(fresh) == sorted(f'norm{i}.{p}' for i in range(4) for p in ('weight', 'bias'))
    assert {'norm.weight', 'norm.bias', 'head.weight', 'head.bias'} <= set(ignored)
    model.load_state_dict(authors_fixture['stage_norms'], strict=False)
    with torch.no_grad():
        feats = model(x)
    assert len(feats) == 4
    for i, (ours, ref) in enumerate(zip(feats, expected)):
        assert ours.shape == ref.shape, f'stage {i}: {tuple(ours.shape)} vs {tuple(ref.shape)}'
        assert rel_err(ours, ref) <= TOL, f'stage {i}: relative error {rel_err(ours, ref):.2e}'


def test_dense_features_odd_input(authors_fixture):
    """100x150 input: the stem pads the width, every downsampling pads."""
    _check_dense(authors_fixture, authors_fixture['x_det'], authors_fixture['feats_det'])


def test_dense_features_classifier_input(authors_fixture):
    _check_dense(authors_fixture, authors_fixture['x_cls'], authors_fixture['feats_cls_input'])
