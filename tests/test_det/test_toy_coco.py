"""tools/data/make_toy_coco.py writes a real COCO instance set: JSON, images and polygon masks agree."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mmmila.utils.coco_format import validate_coco_instances

from ..conftest import seed_for
from .conftest import TOY_CLASSES


def test_toy_set_is_coco_and_masks_match_the_drawn_pixels(tmp_path, make_toy):
    from pycocotools.coco import COCO
    paths = make_toy(tmp_path, num_train=5, num_val=3, size=80, seed=seed_for(3))
    summary = validate_coco_instances(paths['train'], require_masks=True, classes=TOY_CLASSES)
    assert summary['num_images'] == 5 and summary['categories'] == list(TOY_CLASSES)
    assert validate_coco_instances(paths['val'])['num_images'] == 3
    coco = COCO(str(paths['train']))
    assert sorted(coco.getCatIds()) == [1, 2, 3, 4]
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) >= 5  # at least one object per image
    for ann in anns:
        img_info = coco.loadImgs(ann['image_id'])[0]
        img = np.asarray(Image.open(tmp_path / 'train' / img_info['file_name']).convert('RGB')).astype(int)
        mask = coco.annToMask(ann).astype(bool)
        x, y, w, h = ann['bbox']
        ys, xs = np.nonzero(mask)
        # the rasterised polygon lies in its box, and its area is the polygon's area
        assert xs.min() >= int(x) - 1 and xs.max() <= x + w + 1
        assert ys.min() >= int(y) - 1 and ys.max() <= y + h + 1
        assert mask.sum() == pytest.approx(ann['area'], rel=0.25)
        # the object is one flat colour: pixels inside the mask's interior barely vary
        inner = mask & np.roll(mask, 2, 0) & np.roll(mask, -2, 0) & np.roll(mask, 2, 1) & np.roll(mask, -2, 1)
        assert img[inner].std(axis=0).max() < 3.0


def test_same_seed_same_set_and_other_seed_differs(tmp_path, make_toy):
    a = make_toy(tmp_path / 'a', num_train=3, num_val=1, size=64, seed=seed_for(7))
    b = make_toy(tmp_path / 'b', num_train=3, num_val=1, size=64, seed=seed_for(7))
    c = make_toy(tmp_path / 'c', num_train=3, num_val=1, size=64, seed=seed_for(8))
    text = {k: p.read_text() for k, p in a.items()}
    assert text == {k: p.read_text() for k, p in b.items()}
    assert text['train'] != c['train'].read_text()
    first = [(tmp_path / run / 'train' / '000000.png').read_bytes() for run in 'ab']
    assert first[0] == first[1]


def test_objects_do_not_overlap(tmp_path, make_toy):
    path = make_toy(tmp_path, num_train=20, num_val=1, size=96, seed=seed_for(0))['train']
    data = json.loads(path.read_text())
    by_image = {}
    for ann in data['annotations']:
        by_image.setdefault(ann['image_id'], []).append(ann['bbox'])
    for boxes in by_image.values():
        for i, (x0, y0, w0, h0) in enumerate(boxes):
            for x1, y1, w1, h1 in boxes[i + 1:]:
                assert x0 + w0 <= x1 or x1 + w1 <= x0 or y0 + h0 <= y1 or y1 + h1 <= y0


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_train=0), 'at least one image'),
    (dict(size=16), 'at least 32 pixels'),
])
def test_bad_arguments_are_named(tmp_path, make_toy, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_toy(tmp_path, **kwargs)
