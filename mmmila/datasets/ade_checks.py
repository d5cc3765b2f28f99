"""Checks of an ADE20K-format segmentation split, each failing with a message that names the file.

Pure functions (``os`` and numpy only); ``mmmila/datasets/ade20k.py`` calls them from the dataset
(folders, missing label files) and from the annotation-loading transform (label values, shapes).
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

ADE_LAYOUT_HINT = ('expected the ADEChallengeData2016 layout: <data_root>/images/{training,validation}/*.jpg '
                   'and <data_root>/annotations/{training,validation}/*.png (see docs/segmentation.md)')
MAX_LISTED = 5


def check_split_dirs(data_root: str | None, img_dir: str, seg_dir: str | None) -> None:
    """Fail if the data root, the image folder or the label folder of a split is missing.

    Args:
        data_root (str | None): the dataset root (``data_root`` of the config), if any.
        img_dir (str): the split's image folder (already joined with ``data_root``).
        seg_dir (str | None): the split's label folder; None for an unlabelled split.

    Raises:
        FileNotFoundError: naming the first missing folder.
    """
    if data_root and not os.path.isdir(data_root):
        raise FileNotFoundError(f'data root {data_root!r} does not exist (cwd: {os.getcwd()}); '
                                f'{ADE_LAYOUT_HINT}')
    for kind, folder in (('image', img_dir), ('label', seg_dir)):
        if folder is not None and not os.path.isdir(folder):
            raise FileNotFoundError(f'{kind} folder {folder!r} does not exist; {ADE_LAYOUT_HINT}')


def check_labels_exist(pairs: Sequence[tuple[str, str]]) -> None:
    """Fail if any image of a labelled split has no label file.

    Args:
        pairs (Sequence[tuple[str, str]]): (image path, expected label path) per sample.

    Raises:
        FileNotFoundError: naming the first images without labels and how many there are.
    """
    missing = [(img, seg) for img, seg in pairs if not os.path.isfile(seg)]
    if missing:
        listed = '; '.join(f'{img} (expected {seg})' for img, seg in missing[:MAX_LISTED])
        more = f' and {len(missing) - MAX_LISTED} more' if len(missing) > MAX_LISTED else ''
        raise FileNotFoundError(f'{len(missing)} of {len(pairs)} images have no label file: '
                                f'{listed}{more}')


def check_label_map(raw: np.ndarray, path: str, num_classes: int, reduce_zero_label: bool,
                    ignore_index: int = 255, image_shape: Sequence[int] | None = None) -> np.ndarray:
    """Validate a decoded label PNG and return its training labels.

    With ``reduce_zero_label`` (ADE20K), the file holds 0 for "other" (ignored) and 1..num_classes for
    the classes; otherwise it holds 0..num_classes-1. ``ignore_index`` is accepted in both cases.

    Args:
        raw (np.ndarray): (H, W) the decoded file, unchanged (any integer dtype).
        path (str): the file, for the messages.
        num_classes (int): number of classes of the label files.
        reduce_zero_label (bool): whether 0 means "ignore" and ids start at 1.
        ignore_index (int): the ignored label value. Defaults to 255.
        image_shape (Sequence[int] | None): (H, W, ...) of the original image, to compare with.

    Returns:
        np.ndarray: (H, W) uint8 labels in 0..num_classes-1, ``ignore_index`` elsewhere.

    Raises:
        ValueError: naming the file, for several channels, a non-integer type, a shape that differs
            from the image, or ids outside the classes.
    """
    if raw.ndim == 3 and raw.shape[2] == 1:
        raw = raw[..., 0]
    if raw.ndim != 2:
        raise ValueError(f'label file {path} has shape {raw.shape}: expected a single-channel (H, W) map '
                         'of class ids (a colour-coded label image is not a label map)')
    if not np.issubdtype(raw.dtype, np.integer):
        raise ValueError(f'label file {path} holds {raw.dtype} values; expected integer class ids')
    if image_shape is not None and tuple(raw.shape) != tuple(image_shape[:2]):
        raise ValueError(f'label file {path} is {raw.shape[0]}x{raw.shape[1]} but its image is '
                         f'{image_shape[0]}x{image_shape[1]}')
    first = 1 if reduce_zero_label else 0
    ignored = raw == ignore_index
    if reduce_zero_label:
        ignored |= raw == 0
    bad = ~ignored & ((raw < first) | (raw >= first + num_classes))
    if bad.any():
        values = np.unique(raw[bad])
        listed = ', '.join(str(v) for v in values[:10]) + (' ...' if values.size > 10 else '')
        valid = f'{first}..{first + num_classes - 1}' + (', 0' if reduce_zero_label else '')
        raise ValueError(f'label file {path} has ids outside the {num_classes} classes: {listed} '
                         f'({int(bad.sum())} pixels); valid ids are {valid} and {ignore_index} (ignored)')
    labels = raw.astype(np.int64) - first
    labels[ignored] = ignore_index
    return labels.astype(np.uint8)
