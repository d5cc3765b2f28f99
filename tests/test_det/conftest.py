"""Helpers of the detection tests: the toy COCO set, shipped configs shrunk for a CPU step, tools."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from mmengine.config import Config

from ..conftest import REPO, seed_for

CONFIGS = REPO / 'configs'
DET_CONFIGS = {f'{v}_{s}': CONFIGS / f'mask_rcnn_mila_{v}_{s}.py' for v in 'tsb' for s in ('1x', '3x')}
TOY_CONFIG = CONFIGS / 'demo' / 'mask_rcnn_mila_t_toy.py'
TOY_CLASSES = ('square', 'circle', 'triangle', 'star')
# A narrow MILA for fast steps (the real widths are built separately in test_det_configs.py).
NARROW_ARCH = dict(embed_dims=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8))




def tool_env() -> dict:
    """Environment for running the shell launchers in a subprocess with this interpreter."""
    python_path = os.pathsep.join(p for p in (str(REPO), os.environ.get('PYTHONPATH')) if p)
    return dict(os.environ, PYTHON=sys.executable, PYTHONPATH=python_path, OMP_NUM_THREADS='1',
                PATH=f'{Path(sys.executable).parent}{os.pathsep}{os.environ.get("PATH", "")}')


def shrink_sizes(node, factor: float):
    """Scale every ``scale`` / ``scales`` / ``crop_size`` of a pipeline (nested lists and dicts)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in ('scale', 'crop_size') and isinstance(value, (tuple, list)):
                out[key] = tuple(max(8, int(v * factor)) for v in value)
            elif key == 'scales':
                out[key] = [tuple(max(8, int(v * factor)) for v in s) for s in value]
            else:
                out[key] = shrink_sizes(value, factor)
        return out
    if isinstance(node, (list, tuple)):
        return type(node)(shrink_sizes(v, factor) for v in node)
    return node


def data_options(root: Path, num_train: int | None = None, num_eval: int | None = None) -> dict:
    """``--cfg-options`` entries pointing a COCO config at the toy set of ``root``."""
    opts = {}
    for name, split in (('train_dataloader', 'train'), ('val_dataloader', 'val'), ('test_dataloader', 'val')):
        opts.update({f'{name}.dataset.data_root': f'{root}/',
                     f'{name}.dataset.ann_file': f'annotations/instances_{split}.json',
                     f'{name}.dataset.data_prefix.img': f'{split}/',
                     f'{name}.dataset.metainfo.classes': TOY_CLASSES,
                     f'{name}.num_workers': 0,
                     f'{name}.persistent_workers': False})
    for name in ('val_evaluator', 'test_evaluator'):
        opts[f'{name}.ann_file'] = f'{root}/annotations/instances_val.json'
    if num_train is not None:
        opts['train_dataloader.dataset.indices'] = num_train
    if num_eval is not None:
        opts['val_dataloader.dataset.indices'] = num_eval
        opts['test_dataloader.dataset.indices'] = num_eval
    return opts


def toy_step_config(path: Path, root: Path, work_dir: Path, narrow: bool = True) -> Config:
    """A shipped config pointed at the toy set: 1 training iteration, small images, 4 classes."""
    cfg = Config.fromfile(str(path))
    cfg.merge_from_dict(data_options(root, num_train=2, num_eval=2))
    cfg.model.roi_head.bbox_head.num_classes = len(TOY_CLASSES)
    cfg.model.roi_head.mask_head.num_classes = len(TOY_CLASSES)
    cfg.model.backbone.init_cfg = None
    # untrained weights score below mmdet's 0.05 score threshold: keep every box
    cfg.model.test_cfg.rcnn.score_thr = 0.0
    cfg.model.test_cfg.rcnn.max_per_img = 10
    if narrow:
        cfg.model.backbone.arch = NARROW_ARCH
        cfg.model.neck.in_channels = [32, 64, 128, 256]
    for name in ('train_dataloader', 'test_dataloader', 'val_dataloader'):
        cfg[name].dataset.pipeline = shrink_sizes(cfg[name].dataset.pipeline, 1 / 8)
    cfg.train_cfg.max_epochs = 1
    cfg.train_cfg.val_interval = 10  # no validation inside the step test
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.update(interval=100, save_last=False)  # no file to write
    cfg.randomness = dict(seed=seed_for(0))
    cfg.work_dir = str(work_dir)
    return cfg


@pytest.fixture(scope='session')
def make_toy():
    from mmmila.datasets.toy_coco import make_toy_coco
    return make_toy_coco


@pytest.fixture(scope='session')
def toy_root(tmp_path_factory, make_toy) -> Path:
    """A toy COCO set shared by the session: 6 training and 3 validation images of 64x64."""
    root = tmp_path_factory.mktemp('toy_coco')
    make_toy(root, num_train=6, num_val=3, size=64, seed=seed_for(1))
    return root


@pytest.fixture(scope='session', autouse=True)
def _plain_config_text():
    """Skip yapf when a Runner logs and dumps its config (seconds per Runner, cosmetic only)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr('mmengine.config.config.FormatCode', lambda text, **kwargs: (text, False))
        yield
