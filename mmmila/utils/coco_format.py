"""Structural check of a COCO annotation file, with messages that name the file and the problem."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

IMAGE_KEYS = ('id', 'file_name', 'width', 'height')
ANN_KEYS = ('id', 'image_id', 'category_id', 'bbox')


class CocoFormatError(ValueError):
    """An annotation file that is not in the COCO instances format."""


def _expected(path: str) -> str:
    return (f'{path}: expected a COCO instances JSON object with "images" (id, file_name, width, '
            f'height), "annotations" (id, image_id, category_id, bbox, segmentation) and "categories" '
            f'(id, name)')


def _check_records(path: str, field: str, records, keys: Sequence[str]) -> None:
    if not isinstance(records, list):
        raise CocoFormatError(f'{_expected(path)}; "{field}" is a {type(records).__name__}, not a list')
    for i, rec in enumerate(records):
        missing = [k for k in keys if not isinstance(rec, dict) or k not in rec]
        if missing:
            raise CocoFormatError(f'{_expected(path)}; {field}[{i}] lacks {missing}')


def validate_coco_instances(path: str | Path, require_annotations: bool = True,
                            require_masks: bool = False,
                            classes: Iterable[str] | None = None) -> dict:
    """Check that ``path`` holds COCO instance annotations, and return a short summary.

    Args:
        path (str | Path): the JSON file.
        require_annotations (bool): the file must have an "annotations" list (training and
            evaluation); test-dev image lists need not. Defaults to True.
        require_masks (bool): every annotation must have a "segmentation". Defaults to False.
        classes (Iterable[str] | None): class names the config trains or tests on; each must be a
            category name of the file. Defaults to None (not checked).

    Returns:
        dict: ``num_images``, ``num_annotations`` and ``categories`` (names, in file order).

    Raises:
        CocoFormatError: the file is not JSON, or a required field or key is missing or wrong.
    """
    path = str(path)
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CocoFormatError(f'{_expected(path)}; the file is not valid JSON ({err})') from None
    if not isinstance(data, dict):
        raise CocoFormatError(f'{_expected(path)}; the file holds a JSON {type(data).__name__} '
                              '(a list is what detectors write as results, not annotations)')
    needed = ['images', 'categories'] + (['annotations'] if require_annotations else [])
    missing = [k for k in needed if k not in data]
    if missing:
        raise CocoFormatError(f'{_expected(path)}; missing top-level keys {missing} '
                              f'(found {sorted(data)[:8]})')
    _check_records(path, 'images', data['images'], IMAGE_KEYS)
    _check_records(path, 'categories', data['categories'], ('id', 'name'))
    if not data['categories']:
        raise CocoFormatError(f'{_expected(path)}; "categories" is empty')
    anns = data.get('annotations', [])
    _check_records(path, 'annotations', anns, ANN_KEYS + (('segmentation',) if require_masks else ()))
    image_ids = {img['id'] for img in data['images']}
    cat_ids = {cat['id'] for cat in data['categories']}
    for i, ann in enumerate(anns):
        bbox = ann['bbox']
        if not (isinstance(bbox, list) and len(bbox) == 4):
            raise CocoFormatError(f'{_expected(path)}; annotations[{i}].bbox is {bbox!r}, '
                                  'not [x, y, width, height]')
        if ann['image_id'] not in image_ids:
            raise CocoFormatError(f'{path}: annotations[{i}] refers to image_id {ann["image_id"]}, '
                                  'which is not in "images"')
        if ann['category_id'] not in cat_ids:
            raise CocoFormatError(f'{path}: annotations[{i}] refers to category_id '
                                  f'{ann["category_id"]}, which is not in "categories"')
    names = [cat['name'] for cat in data['categories']]
    if classes is not None:
        unknown = [c for c in classes if c not in names]
        if unknown:
            raise CocoFormatError(
                f'{path}: the config\'s classes {unknown[:5]}{" ..." if len(unknown) > 5 else ""} are not '
                f'categories of this file (it has {names[:10]}{" ..." if len(names) > 10 else ""}); '
                'set the dataset\'s metainfo=dict(classes=...) to the file\'s category names')
    return dict(num_images=len(data['images']), num_annotations=len(anns), categories=names)
