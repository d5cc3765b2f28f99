"""Helpers of the segmentation tests: the toy ADE20K set, config loading, fake released checkpoints."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from ..conftest import AUTHORS_KEYS, REPO, seed_for
from ..plain_config import plain_config_text

CONFIGS = REPO / 'configs'
SEG_CONFIGS = {v: CONFIGS / f'upernet_mila_{v}_512x512_160k_ade20k.py' for v in 'tsb'}
TOY_CONFIG = CONFIGS / 'demo' / 'upernet_mila_t_toy.py'
VARIANT_NAMES = {'t': 'MILA-T', 's': 'MILA-S', 'b': 'MILA-B'}




@pytest.fixture(scope='session', autouse=True)
def _seg_registered():
    """Make sure the checked ADE20K dataset and transform are in mmseg's registries."""
    import mmmila  # noqa: F401  (registers MILA and, with mmseg, the segmentation classes)
    from mmseg.registry import DATASETS, TRANSFORMS
    assert 'ADE20KCheckedDataset' in DATASETS.module_dict and 'LoadCheckedSegAnnotations' in TRANSFORMS.module_dict


@pytest.fixture(scope='session', autouse=True)
def _plain_config_text():
    """Unformatted config text when a Runner logs and dumps its config: yapf's formatting takes
    seconds per Runner and is cosmetic (the text is one ``key = value`` line per entry, still valid
    Python that reads back as the same config)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Config, 'pretty_text', property(plain_config_text))
        yield


@pytest.fixture(scope='module', autouse=True)
def _one_thread():
    """One PyTorch thread: on this shared 2-core machine a second thread mostly waits for a core
    (toy backbone forward + backward under load: 0.18 s with one thread, 0.84 s with two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _mmseg_scope():
    """Build registry names in mmseg's scope, as a config's ``default_scope='mmseg'`` does."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield


@pytest.fixture(scope='session')
def make_toy():
    from mmmila.datasets.toy_ade import make_toy_ade
    return make_toy_ade


@pytest.fixture(scope='session')
def toy_root(tmp_path_factory, make_toy) -> Path:
    """A toy ADE20K set shared by the session: 16 training, 4 validation, 2 test images of 96x128."""
    return make_toy(tmp_path_factory.mktemp('ade_toy') / 'ADEChallengeData2016',
                    num_train=16, num_val=4, num_test=2, seed=seed_for(0))


def point_at(cfg: Config, root: Path, num_val: int | None = None) -> Config:
    """Point every dataloader of ``cfg`` at ``root`` with no worker processes."""
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg[name]
        loader.update(num_workers=0, persistent_workers=False)
        loader.dataset.data_root = str(root)
        if num_val is not None and name != 'train_dataloader':
            loader.dataset.indices = num_val
    return cfg


def released_state_dict(variant: str, seed: int = 0) -> dict:
    """A state dict in the authors' released format for 'T'/'S'/'B', random values of the real shapes.

    Weights are N(0, 0.02) (norm scales and BatchNorm variances 1 + that), the scale of a trained
    network: deep enough stacks of N(0, 1) weights overflow.
    """
    shapes = json.loads(AUTHORS_KEYS.read_text())[VARIANT_NAMES[variant.lower()]]
    gen = torch.Generator().manual_seed(seed_for(seed))
    state = {}
    for key, shape in shapes.items():
        if key.endswith('num_batches_tracked'):
            state[key] = torch.tensor(0)
        elif key.endswith('running_var') or ('norm' in key and key.endswith('weight')):
            state[key] = 1 + 0.02 * torch.randn(shape, generator=gen)
        else:
            state[key] = 0.02 * torch.randn(shape, generator=gen)
    return state
