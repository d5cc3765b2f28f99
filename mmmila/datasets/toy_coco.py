"""Write a small COCO-format instance segmentation set of drawn shapes (the demo's data).

Each image shows 1-4 non-overlapping filled shapes — squares, circles, triangles and stars, each
class in its own colour family, at random sizes, positions and rotations — on a noisy background.
Masks are the shapes' polygons. The layout follows mmdet's COCO convention::

    OUT/annotations/instances_train.json   OUT/train/000000.png ...
    OUT/annotations/instances_val.json     OUT/val/000000.png ...

Command line: ``tools/data/make_toy_coco.py``.
"""
from __future__ import annotations

import colorsys
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ('square', 'circle', 'triangle', 'star')
HUES = {'square': 0.0, 'circle': 0.33, 'triangle': 0.6, 'star': 0.15}  # red, green, blue, yellow


def shape_polygon(name: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a shape of circumradius ``r`` centred at (cx, cy), rotated by ``angle`` rad."""
    if name == 'square':
        radii, n = [r], 4
    elif name == 'triangle':
        radii, n = [r], 3
    elif name == 'circle':
        radii, n = [r], 32
    elif name == 'star':
        radii, n = [r, 0.45 * r], 10
    else:
        raise ValueError(f'unknown shape {name!r}; choose from {CLASSES}')
    return [(cx + radii[i % len(radii)] * math.cos(angle + 2 * math.pi * i / n),
             cy + radii[i % len(radii)] * math.sin(angle + 2 * math.pi * i / n)) for i in range(n)]


def polygon_area(points: list[tuple[float, float]]) -> float:
    """Shoelace area of a simple polygon."""
    return 0.5 * abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1])))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.uniform(70, 190, size=3)
    ramp = np.linspace(-25, 25, size)[None, :, None] * rng.uniform(-1, 1, size=3)
    img = base + ramp + rng.normal(0, 8, size=(size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _colour(rng: np.random.Generator, name: str) -> tuple[int, int, int]:
    hue = (HUES[name] + rng.uniform(-0.04, 0.04)) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _place(rng: np.random.Generator, size: int, boxes: list, r_range: tuple[float, float], tries: int = 50):
    for _ in range(tries):
        r = rng.uniform(*r_range) * size
        cx, cy = rng.uniform(r + 1, size - r - 1, size=2)
        box = (cx - r - 3, cy - r - 3, cx + r + 3, cy + r + 3)
        if all(box[2] < b[0] or b[2] < box[0] or box[3] < b[1] or b[3] < box[1] for b in boxes):
            return cx, cy, r, box
    return None


def draw_image(rng: np.random.Generator, size: int, max_objects: int = 4) -> tuple[Image.Image, list[dict]]:
    """One image and its objects: ``[{'category': name, 'polygon': [(x, y), ...]}, ...]``."""
    img = Image.fromarray(_background(rng, size))
    draw = ImageDraw.Draw(img)
    boxes, objects = [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        placed = _place(rng, size, boxes, (0.1, 0.22))
        if placed is None:
            continue
        cx, cy, r, box = placed
        name = CLASSES[int(rng.integers(len(CLASSES)))]
        polygon = shape_polygon(name, cx, cy, r, rng.uniform(0, 2 * math.pi))
        draw.polygon(polygon, fill=_colour(rng, name))
        boxes.append(box)
        objects.append(dict(category=name, polygon=polygon))
    return img, objects


def write_split(out: Path, split: str, num_images: int, size: int, rng: np.random.Generator) -> Path:
    """Draw ``num_images`` images into ``out/split/`` and write ``out/annotations/instances_split.json``."""
    (out / split).mkdir(parents=True, exist_ok=True)
    (out / 'annotations').mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id in range(num_images):
        img, objects = draw_image(rng, size)
        file_name = f'{image_id:06d}.png'
        img.save(out / split / file_name)
        images.append(dict(id=image_id, file_name=file_name, width=size, height=size))
        for obj in objects:
            xs, ys = [p[0] for p in obj['polygon']], [p[1] for p in obj['polygon']]
            annotations.append(dict(
                id=len(annotations) + 1, image_id=image_id,
                category_id=CLASSES.index(obj['category']) + 1,
                segmentation=[[round(v, 2) for p in obj['polygon'] for v in p]],
                area=round(polygon_area(obj['polygon']), 2),
                bbox=[round(min(xs), 2), round(min(ys), 2), round(max(xs) - min(xs), 2),
                      round(max(ys) - min(ys), 2)],
                iscrowd=0))
    coco = dict(
        info=dict(description=f'mmmila toy shapes, {split}', version='1.0'),
        licenses=[],
        images=images,
        annotations=annotations,
        categories=[dict(id=i + 1, name=name, supercategory='shape') for i, name in enumerate(CLASSES)])
    path = out / 'annotations' / f'instances_{split}.json'
    path.write_text(json.dumps(coco))
    return path


def make_toy_coco(out: str | Path, num_train: int = 200, num_val: int = 40, size: int = 128,
                  seed: int = 0) -> dict[str, Path]:
    """Write the train and val splits; returns ``{'train': json path, 'val': json path}``."""
    if num_train < 1 or num_val < 1:
        raise ValueError(f'need at least one image per split, got num_train={num_train}, num_val={num_val}')
    if size < 32:
        raise ValueError(f'size must be at least 32 pixels, got {size}')
    rng = np.random.default_rng(seed)
    out = Path(out)
    splits = (('train', num_train), ('val', num_val))
    return {split: write_split(out, split, n, size, rng) for split, n in splits}
