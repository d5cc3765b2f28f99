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

import subprocess
import sys

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# The project's own reference data (see tests/data/README.md): the authors' outputs on a tiny model
# and the key list of their released checkpoints.
DATA = REPO / 'tests' / 'data'
FIXTURE = DATA / 'mila_authors_tiny.pt'
AUTHORS_KEYS = DATA / 'authors_keys.json'

# The tiny architecture of the fixture (C = 32, depths 1, 1, 2, 1, heads 1, 2, 4, 8).
TINY_ARCH = dict(embed_dims=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8))


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason='needs a CUDA GPU')
    if not torch.cuda.is_available():
        for item in items:
            if 'cuda' in item.keywords:
                item.add_marker(skip_cuda)


# Every random draw of the suite comes from a seed: the global generators are seeded before each
# test, and a test that makes its own generator takes its seed from seed_for(). MMMILA_TEST_SEED
# (default 0) shifts all of them at once, which is how the suite is shown to hold for any seed
# (docs/testing.md): `for s in $(seq 0 19); do MMMILA_TEST_SEED=$s pytest ...; done`.
TEST_SEED = int(os.environ.get('MMMILA_TEST_SEED', '0'))


def seed_for(offset: int = 0) -> int:
    """The seed of a test's own draw number ``offset``: fixed for a run, shifted by MMMILA_TEST_SEED."""
    return offset + 1_000_003 * TEST_SEED




@pytest.fixture(autouse=True)
def _seed():
    import random

    import numpy as np
    torch.manual_seed(seed_for())
    random.seed(seed_for())
    np.random.seed(seed_for() % 2**32)


@pytest.fixture(scope='session')
def authors_fixture() -> dict:
    if not FIXTURE.exists():
        pytest.fail(f'reference data {FIXTURE} is missing from the checkout (tests/data/README.md)')
    # A file of the repository holding plain tensors and dicts: the weights-only loader reads it.
    return torch.load(FIXTURE, map_location='cpu', weights_only=True)


def run_tool(script: str, *args, cwd=None, timeout: int = 1200) -> subprocess.CompletedProcess:
    """Run ``tools/<script>`` as a user does, in its own Python process (this interpreter, one thread
    unless OMP_NUM_THREADS says otherwise); a non-zero exit fails the test with the tool's last output.
    Expected failures: :func:`run_tool_unchecked`."""
    result = run_tool_unchecked(script, *args, cwd=cwd, timeout=timeout)
    assert result.returncode == 0, f'tools/{script} exited {result.returncode}:\n{result.stderr[-4000:]}'
    return result


def run_tool_unchecked(script: str, *args, cwd=None, timeout: int = 1200) -> subprocess.CompletedProcess:
    """:func:`run_tool` without the exit-status check."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1'))
    return subprocess.run([sys.executable, str(REPO / 'tools' / script), *map(str, args)], cwd=cwd or REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)
