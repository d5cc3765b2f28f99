"""Helpers of the classification tests: a tiny ImageNet-format folder of real photos, and
configs that inherit the real ``configs/mila_*_in1k.py`` with only the model made small."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ..conftest import REPO, TINY_ARCH

NUM_CLASSES = 10  # the fixture's classifier has 10 classes


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on the shared 2-core machine two threads are far slower under load."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def photos() -> list[np.ndarray]:
    """Real RGB photos from scikit-image, plus flipped copies: 6 images of different sizes."""
    from skimage import data
    base = [data.chelsea(), data.coffee(), data.astronaut()[::2, ::2]]
    return base + [p[:, ::-1] for p in base]


def write_imagenet(root: Path, size: int = 96) -> Path:
    """``root/{train,val}/*.png`` and ``root/meta/{train,val}.txt``: mmpretrain's ImageNet layout.

    Images are resized so that their short side is ``size`` (cheap to load); labels are 0 .. 5.
    """
    from PIL import Image
    (root / 'meta').mkdir(parents=True, exist_ok=True)
    for split in ('train', 'val'):
        (root / split).mkdir(exist_ok=True)
        lines = []
        for label, img in enumerate(photos()):
            h, w = img.shape[:2]
            scale = size / min(h, w)
            im = Image.fromarray(np.ascontiguousarray(img)).resize((round(w * scale), round(h * scale)))
            name = f'{split}_{label}.png'
            im.save(root / split / name)
            lines.append(f'{name} {label}')
        (root / 'meta' / f'{split}.txt').write_text('\n'.join(lines) + '\n')
    return root


@pytest.fixture(scope='session')
def tiny_imagenet(tmp_path_factory) -> Path:
    return write_imagenet(tmp_path_factory.mktemp('imagenet'))


def tiny_config(tmp_path: Path, variant: str = 't', data_root: str | Path = 'data/imagenet',
                extra: str = '', small_images: bool = False) -> Path:
    """A config file inheriting ``configs/mila_{variant}_in1k.py``: fixture-sized model (C=32,
    10 classes), batch 2, no workers, the pipelines of the config or (``small_images``) the same
    ones at 64 px; ``extra`` is appended verbatim."""
    arch = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in TINY_ARCH.items()}
    arch['_delete_'] = True  # a dict replaces the base's arch name
    train_pipe = f', pipeline={SMALL_TRAIN}' if small_images else ''
    test_pipe = f', pipeline={SMALL_TEST}' if small_images else ''
    text = f"""
_base_ = [{str(REPO / 'configs' / f'mila_{variant}_in1k.py')!r}]
model = dict(backbone=dict(arch={arch!r}), head=dict(num_classes={NUM_CLASSES}, in_channels=256))
data_preprocessor = dict(num_classes={NUM_CLASSES})
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root={str(data_root)!r}{train_pipe}))
val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root={str(data_root)!r}{test_pipe}))
test_dataloader = val_dataloader
work_dir = {str(tmp_path / 'work')!r}
""" + extra
    path = tmp_path / f'tiny_mila_{variant}_in1k.py'
    path.write_text(text)
    return path


# The configs' pipelines with 64 px crops (RandAugment and RandomErasing as in the config).
SMALL_TRAIN = """[
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=64, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2, total_level=10, magnitude_level=9,
         magnitude_std=0.5, hparams=dict(pad_val=[104, 116, 124], interpolation='bicubic')),
    dict(type='RandomErasing', erase_prob=0.25, mode='rand', min_area_ratio=0.02, max_area_ratio=1 / 3,
         fill_color=[103.53, 116.28, 123.675], fill_std=[57.375, 57.12, 58.395]),
    dict(type='PackInputs')]"""
SMALL_TEST = """[
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=73, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=64),
    dict(type='PackInputs')]"""
