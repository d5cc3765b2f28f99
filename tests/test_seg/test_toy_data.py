"""The toy ADE20K generator writes the benchmark's layout, valid labels, and the same files per seed."""
from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ..conftest import REPO, seed_for


def digest(root):
    return {p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob('*')) if p.is_file()}


def test_layout_and_labels(toy_root):
    from mmmila.datasets import toy_ade as toy
    for split, prefix, count in (('training', 'train', 16), ('validation', 'val', 4)):
        images = sorted((toy_root / 'images' / split).glob('*.jpg'))
        labels = sorted((toy_root / 'annotations' / split).glob('*.png'))
        assert [p.stem for p in images] == [f'ADE_{prefix}_{i:08d}' for i in range(1, count + 1)]
        assert [p.stem for p in labels] == [p.stem for p in images]
        seen = set()
        for img, lab in zip(images, labels):
            label = Image.open(lab)
            assert label.mode == 'L'
            assert Image.open(img).size == label.size == (128, 96)
            seen |= set(np.unique(np.array(label)).tolist())
        assert seen <= set(toy.TOY_CLASSES) | {0}
        assert len(seen) >= 5  # several classes, not one flat map
    assert len(list((toy_root / 'images' / 'testing').glob('ADE_test_*.jpg'))) == 2
    assert not (toy_root / 'annotations' / 'testing').exists()


def test_seed_decides_the_files(tmp_path, make_toy):
    a = digest(make_toy(tmp_path / 'a', 2, 1, 1, seed=seed_for(3)))
    b = digest(make_toy(tmp_path / 'b', 2, 1, 1, seed=seed_for(3)))
    c = digest(make_toy(tmp_path / 'c', 2, 1, 1, seed=seed_for(4)))
    assert a == b and len(a) == 7  # 3 labelled images (jpg + png) and 1 test image
    assert a != c


def test_colours_identify_the_classes(toy_root):
    """Every class's pixels sit near its own colour: the set is learnable from colour alone."""
    from mmmila.datasets import toy_ade as toy
    for lab in sorted((toy_root / 'annotations' / 'training').glob('*.png'))[:4]:
        label = np.array(Image.open(lab))
        image = np.array(Image.open(toy_root / 'images' / 'training' / f'{lab.stem}.jpg'), np.float32)
        for cls in set(np.unique(label).tolist()) - {0}:
            mean = image[label == cls].mean(0)
            dist = {c: np.abs(mean - rgb).sum() for c, (_, rgb) in toy.TOY_CLASSES.items()}
            assert min(dist, key=dist.get) == cls


def test_bad_arguments(tmp_path, make_toy):
    with pytest.raises(ValueError, match='at least 16x16'):
        make_toy(tmp_path, height=8)
    with pytest.raises(ValueError, match='counts must be >= 0'):
        make_toy(tmp_path, num_val=-1)


def test_command_line(tmp_path):
    out = tmp_path / 'ADEChallengeData2016'
    subprocess.run([sys.executable, str(REPO / 'tools' / 'data' / 'make_toy_ade.py'), str(out),
                    '--train', '2', '--val', '1', '--test', '0', '--height', '32', '--width', '48'],
                   check=True, capture_output=True)
    assert Image.open(out / 'annotations' / 'training' / 'ADE_train_00000002.png').size == (48, 32)
    assert len(list(out.rglob('*.jpg'))) == 3
