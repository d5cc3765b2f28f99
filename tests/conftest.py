"""Test helpers used across the suite: seeds, the reference data in tests/data/, small model builders."""
from __future__ import annotations

import os
from pathlib import Path

# Triton decides at decoration time whether a kernel runs in its interpreter: without a GPU, the
# project's kernels are tested on CPU tensors under TRITON_INTERPRET=1 (set before any import).
if 'TRITON_INTERPRET' not in os.environ:
    import torch as _torch
    if not _torch.cuda.is_available():
        os.environ['TRITON_INTERPRET'] = '1'

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# The project's own reference data (see tests/data/README.md): the authors' outputs on a tiny model
# and the key list of their released checkpoints.
DATA = REPO / 'tests' / 'data'
FIXTURE = DATA / 'mila_official_tiny.pt'
OFFICIAL_KEYS = DATA / 'official_keys.json'

# The tiny architecture of the fixture (C = 32, depths 1, 1, 2, 1, heads 1, 2, 4, 8).
TINY_ARCH = dict(embed_dims=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8))


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason='needs a CUDA GPU')
    if not torch.cuda.is_available():
        for item in items:
            if 'cuda' in item.keywords:
                item.add_marker(skip_cuda)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope='session')
def official_fixture() -> dict:
    if not FIXTURE.exists():
        pytest.fail(f'reference data {FIXTURE} is missing from the checkout (tests/data/README.md)')
    # A file of the repository holding plain tensors and dicts: the weights-only loader reads it.
    return torch.load(FIXTURE, map_location='cpu', weights_only=True)
