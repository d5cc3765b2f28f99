"""Write a small synthetic dataset in ADE20K's layout, for tests and the short demo training run.

Each image is a scene of colour-coded regions: sky above a random horizon, floor, road or grass
below it, then buildings, trees, cars and people drawn on top, plus a few "other" (id 0, ignored)
blobs. Each class keeps its colour (with per-image jitter, pixel noise and JPEG compression), so a
small network learns it in a few hundred iterations. Ids are ADE20K's (1..150, 0 = other):

    <out>/images/training/ADE_train_00000001.jpg      <out>/annotations/training/ADE_train_00000001.png
    <out>/images/validation/ADE_val_00000001.jpg      <out>/annotations/validation/ADE_val_00000001.png
    <out>/images/testing/ADE_test_00000001.jpg        (no labels, like the benchmark's test images)

Command line: ``tools/data/make_toy_ade.py``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# ADE20K id -> base colour (RGB) of the toy classes.
TOY_CLASSES = {
    2: ('building', (150, 110, 90)),
    3: ('sky', (90, 160, 235)),
    4: ('floor', (185, 170, 130)),
    5: ('tree', (40, 140, 50)),
    7: ('road', (75, 75, 80)),
    10: ('grass', (120, 200, 70)),
    13: ('person', (220, 60, 60)),
    21: ('car', (240, 220, 40)),
}
GROUNDS = (4, 7, 10)
SPLITS = (('training', 'train', True), ('validation', 'val', True), ('testing', 'test', False))


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    """(h, w) bool mask of an axis-aligned ellipse."""
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _box(h: int, w: int, y0: int, x0: int, bh: int, bw: int) -> np.ndarray:
    """(h, w) bool mask of a rectangle (clipped to the image)."""
    mask = np.zeros((h, w), bool)
    mask[max(y0, 0):max(y0 + bh, 0), max(x0, 0):max(x0 + bw, 0)] = True
    return mask


def make_scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw one toy scene.

    Args:
        rng (np.random.Generator): the random source.
        height (int): image height (>= 16).
        width (int): image width (>= 16).

    Returns:
        tuple[np.ndarray, np.ndarray]: the (H, W, 3) uint8 RGB image and the (H, W) uint8 label map
        with ADE20K ids (0 = other).
    """
    h, w = height, width
    label = np.full((h, w), 3, np.uint8)
    horizon = int(rng.uniform(0.3, 0.6) * h)
    label[horizon:] = rng.choice(GROUNDS)
    shapes = []
    for _ in range(rng.integers(1, 3)):  # buildings standing on the horizon
        bw, bh = int(rng.uniform(0.15, 0.35) * w), int(rng.uniform(0.2, 0.5) * h)
        shapes.append((2, _box(h, w, horizon - bh, int(rng.uniform(-0.1, 0.9) * w), bh, bw)))
    for _ in range(rng.integers(0, 3)):  # trees
        cx, r = rng.uniform(0, w), rng.uniform(0.08, 0.18) * min(h, w)
        shapes.append((5, _ellipse(h, w, horizon - r * 0.8, cx, r * 1.3, r)))
    for _ in range(rng.integers(0, 3)):  # cars on the ground
        bw, bh = int(rng.uniform(0.12, 0.25) * w), int(rng.uniform(0.08, 0.15) * h)
        y0, x0 = int(rng.uniform(horizon, h - bh)), int(rng.uniform(0, w - bw))
        shapes.append((21, _box(h, w, y0, x0, bh, bw)))
    for _ in range(rng.integers(0, 3)):  # people: tall thin ellipses
        ry = rng.uniform(0.1, 0.2) * h
        shapes.append((13, _ellipse(h, w, rng.uniform(horizon, h), rng.uniform(0, w), ry, ry * 0.35)))
    for _ in range(rng.integers(0, 3)):  # unlabelled "other" blobs
        r = rng.uniform(0.03, 0.08) * min(h, w)
        shapes.append((0, _ellipse(h, w, rng.uniform(0, h), rng.uniform(0, w), r, r)))
    for cls, mask in shapes:
        label[mask] = cls

    image = np.empty((h, w, 3), np.float32)
    for cls in np.unique(label):
        base = np.array(TOY_CLASSES[cls][1] if cls else rng.uniform(0, 255, 3), np.float32)
        image[label == cls] = base + rng.normal(0, 12, 3)  # per-image colour jitter
    image += rng.normal(0, 10, image.shape)  # pixel noise
    return np.clip(image, 0, 255).astype(np.uint8), label


def make_toy_ade(out: str | Path, num_train: int = 40, num_val: int = 8, num_test: int = 4,
                 height: int = 96, width: int = 128, seed: int = 0) -> Path:
    """Write the toy dataset under ``out`` (the ``ADEChallengeData2016`` folder).

    Args:
        out (str | Path): the dataset root to create.
        num_train (int): training images. Defaults to 40.
        num_val (int): validation images. Defaults to 8.
        num_test (int): unlabelled test images. Defaults to 4.
        height (int): image height. Defaults to 96.
        width (int): image width. Defaults to 128.
        seed (int): random seed; the same seed writes the same files. Defaults to 0.

    Returns:
        Path: ``out``.
    """
    if min(height, width) < 16:
        raise ValueError(f'toy images must be at least 16x16, got {height}x{width}')
    counts = {'training': num_train, 'validation': num_val, 'testing': num_test}
    if any(n < 0 for n in counts.values()):
        raise ValueError(f'image counts must be >= 0, got {counts}')
    out = Path(out)
    rng = np.random.default_rng(seed)
    for split, prefix, labelled in SPLITS:
        img_dir = out / 'images' / split
        img_dir.mkdir(parents=True, exist_ok=True)
        if labelled:
            (out / 'annotations' / split).mkdir(parents=True, exist_ok=True)
        for i in range(1, counts[split] + 1):
            image, label = make_scene(rng, height, width)
            name = f'ADE_{prefix}_{i:08d}'
            Image.fromarray(image).save(img_dir / f'{name}.jpg', quality=95)
            if labelled:
                Image.fromarray(label).save(out / 'annotations' / split / f'{name}.png')
    return out
