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
# test, and a test that makes its own generator (or passes a seed to a tool or a data maker) takes
# its seed from seed_for(). MMMILA_TEST_SEED (default 0) shifts all of them at once; `make
# test-seeds` runs every test that draws random numbers under 20 seeds (docs/testing.md).
TEST_SEED = int(os.environ.get('MMMILA_TEST_SEED', '0'))
_BASE_SEED = 1_000_003 * TEST_SEED
_seeds_handed_out = 0
_seeded_state = None


def seed_for(offset: int = 0) -> int:
    """The seed of a test's own draw number ``offset``: fixed for a run, shifted by MMMILA_TEST_SEED."""
    global _seeds_handed_out
    _seeds_handed_out += 1
    return _BASE_SEED + offset


def _global_rng_state() -> tuple:
    import random

    import numpy as np
    return bytes(torch.get_rng_state().numpy()), random.getstate(), np.random.get_state()[1].tobytes()


@pytest.fixture(autouse=True)
def _seed():
    """Seed the global generators (torch, random, numpy) before every test."""
    import random

    import numpy as np
    global _seeded_state
    torch.manual_seed(_BASE_SEED)
    random.seed(_BASE_SEED)
    np.random.seed(_BASE_SEED % 2**32)
    if _listing:
        _seeded_state = _global_rng_state()


def pytest_addoption(parser):
    parser.addoption('--list-random-tests', metavar='FILE',
                     help='write the node ids of the tests that drew random numbers to FILE')


_listing = False   # --list-random-tests given: only then is each test's drawing watched


def pytest_configure(config):
    global _listing
    _listing = bool(config.getoption('--list-random-tests'))


_RANDOM_TESTS: list[str] = []
_RANDOM_FIXTURES: set[str] = set()


def _draws_since(handed_out: int, state) -> bool:
    return _seeds_handed_out != handed_out or (state is not None and _global_rng_state() != state)


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    """Note the fixtures that draw: a module-scoped one draws once, for every test that uses it."""
    if fixturedef.argname == '_seed' or not _listing:
        yield
        return
    handed_out, state = _seeds_handed_out, _global_rng_state()
    yield
    if _draws_since(handed_out, state):
        _RANDOM_FIXTURES.add(fixturedef.argname)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """A test draws random numbers when it or a fixture it uses takes a seed from seed_for() or
    moves a global generator away from the state that :func:`_seed` gave it."""
    global _seeded_state
    if not _listing:
        yield
        return
    _seeded_state, handed_out = None, _seeds_handed_out
    yield
    if _draws_since(handed_out, _seeded_state) or _RANDOM_FIXTURES & set(item.fixturenames):
        _RANDOM_TESTS.append(item.nodeid)


def pytest_sessionfinish(session, exitstatus):
    out = session.config.getoption('--list-random-tests')
    if out:
        Path(out).write_text(''.join(f'{node}\n' for node in _RANDOM_TESTS))


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
