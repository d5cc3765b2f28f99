"""Bad ADE20K input stops with a message naming the file: folders, missing labels, label values."""
from __future__ import annotations

import re

import numpy as np
import pytest
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import DATASETS, TRANSFORMS
from PIL import Image

from mmmila.datasets.ade_checks import check_label_map, check_labels_exist, check_split_dirs

from ..conftest import seed_for


def build_split(root, split='training', labelled=True, test_mode=False, pipeline=None):
    prefix = dict(img_path=f'images/{split}',
                  seg_map_path=f'annotations/{split}' if labelled else None)
    return DATASETS.build(dict(type='ADE20KCheckedDataset', data_root=str(root), data_prefix=prefix,
                               test_mode=test_mode, pipeline=pipeline or []))


LOAD = [dict(type='LoadImageFromFile'), dict(type='LoadCheckedSegAnnotations', num_classes=150)]


# ----------------------------------------------------------------------------- label values
def test_label_map_reduces_zero_and_keeps_ignore():
    raw = np.array([[0, 1, 2], [150, 255, 7]], np.uint8)
    labels = check_label_map(raw, 'a.png', num_classes=150, reduce_zero_label=True)
    np.testing.assert_array_equal(labels, [[255, 0, 1], [149, 255, 6]])
    assert labels.dtype == np.uint8


def test_label_map_without_reduction_keeps_ids():
    raw = np.array([[0, 149], [255, 3]], np.uint8)
    labels = check_label_map(raw, 'a.png', num_classes=150, reduce_zero_label=False)
    np.testing.assert_array_equal(labels, raw)


@pytest.mark.parametrize('reduce, bad', [(True, 151), (True, 200), (False, 150), (False, 254)])
def test_label_ids_outside_the_classes_are_named(reduce, bad):
    raw = np.full((4, 5), 1, np.uint8)
    raw[2, 3] = bad
    with pytest.raises(ValueError, match=rf'label file dir/x\.png has ids outside the 150 classes: {bad} '):
        check_label_map(raw, 'dir/x.png', num_classes=150, reduce_zero_label=reduce)


def test_sixteen_bit_labels_are_not_wrapped_to_uint8():
    raw = np.full((3, 3), 5, np.uint16)
    raw[0, 0] = 256 + 5  # would read as 5 after a uint8 cast
    with pytest.raises(ValueError, match='261'):
        check_label_map(raw, 'x.png', num_classes=150, reduce_zero_label=True)


def test_colour_label_images_and_float_maps_are_rejected():
    with pytest.raises(ValueError, match=r'x\.png has shape \(4, 4, 3\).*single-channel'):
        check_label_map(np.ones((4, 4, 3), np.uint8), 'x.png', 150, True)
    with pytest.raises(ValueError, match='float32'):
        check_label_map(np.ones((4, 4), np.float32), 'x.png', 150, True)
    # a single trailing channel is a plain map
    assert check_label_map(np.ones((4, 4, 1), np.uint8), 'x.png', 150, True).shape == (4, 4)


def test_label_size_must_match_the_image():
    with pytest.raises(ValueError, match=r'label file x\.png is 4x6 but its image is 4x5'):
        check_label_map(np.ones((4, 6), np.uint8), 'x.png', 150, True, image_shape=(4, 5, 3))


# ----------------------------------------------------------------------------- files and folders
def test_missing_labels_are_listed(tmp_path):
    for name in ('a', 'b', 'c'):
        (tmp_path / f'{name}.png').touch()
    pairs = [(f'img/{n}.jpg', str(tmp_path / f'{n}.png')) for n in 'abcde']
    with pytest.raises(FileNotFoundError, match=r'2 of 5 images have no label file: img/d\.jpg'):
        check_labels_exist(pairs)
    check_labels_exist(pairs[:3])


def test_missing_folders_are_named(tmp_path):
    (tmp_path / 'images').mkdir()
    with pytest.raises(FileNotFoundError, match=re.escape(repr(str(tmp_path / 'nope')))):
        check_split_dirs(str(tmp_path / 'nope'), str(tmp_path / 'images'), None)
    with pytest.raises(FileNotFoundError, match='label folder .*annotations'):
        check_split_dirs(str(tmp_path), str(tmp_path / 'images'), str(tmp_path / 'annotations'))
    check_split_dirs(str(tmp_path), str(tmp_path / 'images'), None)


# ----------------------------------------------------------------------------- the dataset
@pytest.fixture()
def small_toy(tmp_path, make_toy):
    return make_toy(tmp_path / 'ADEChallengeData2016', num_train=3, num_val=1, num_test=2, seed=seed_for(1))


def test_missing_data_root_is_named(tmp_path):
    root = tmp_path / 'data' / 'ade' / 'ADEChallengeData2016'
    with pytest.raises(FileNotFoundError, match=f'data root .*{re.escape(str(root))}.* does not exist'):
        build_split(root)


def test_image_without_label_is_named(small_toy):
    (small_toy / 'annotations' / 'training' / 'ADE_train_00000002.png').unlink()
    expected = (r'1 of 3 images have no label file: .*ADE_train_00000002\.jpg '
                r'\(expected .*annotations/training/ADE_train_00000002\.png\)')
    with pytest.raises(FileNotFoundError, match=expected):
        build_split(small_toy)


def test_empty_split_is_an_error(small_toy):
    for path in (small_toy / 'images' / 'validation').iterdir():
        path.unlink()
    with pytest.raises(FileNotFoundError, match='no .jpg images found'):
        build_split(small_toy, 'validation')


def test_label_with_ids_outside_the_classes_fails_when_loaded(small_toy):
    path = small_toy / 'annotations' / 'training' / 'ADE_train_00000003.png'
    label = np.array(Image.open(path))
    label[:2, :2] = 151
    Image.fromarray(label).save(path)
    dataset = build_split(small_toy, pipeline=LOAD)
    dataset[0]  # a good file loads
    expected = r'ADE_train_00000003\.png has ids outside the 150 classes: 151 \(4 pixels\)'
    with pytest.raises(ValueError, match=expected):
        dataset[2]


def test_checked_loading_matches_mmseg(small_toy):
    """On valid files the checked transform gives exactly mmseg's LoadAnnotations result."""
    dataset = build_split(small_toy, pipeline=[dict(type='LoadImageFromFile')])
    ours, stock = TRANSFORMS.build(dict(type='LoadCheckedSegAnnotations', num_classes=150)), LoadAnnotations()
    for i in range(len(dataset)):
        a, b = ours(dict(dataset[i], seg_fields=[])), stock(dict(dataset[i], seg_fields=[]))
        np.testing.assert_array_equal(a['gt_seg_map'], b['gt_seg_map'])
        assert a['seg_fields'] == ['gt_seg_map']
        assert 255 in a['gt_seg_map'] or a['gt_seg_map'].max() < 150


def test_unlabelled_split_is_for_testing_only(small_toy):
    with pytest.raises(ValueError, match='unlabelled split .* only be used for testing'):
        build_split(small_toy, 'testing', labelled=False)
    dataset = build_split(small_toy, 'testing', labelled=False, test_mode=True, pipeline=LOAD)
    assert len(dataset) == 2
    sample = dataset[1]
    assert sample['img_path'].endswith('ADE_test_00000002.jpg')
    assert 'gt_seg_map' not in sample and 'seg_map_path' not in sample


def test_transform_needs_positive_num_classes():
    with pytest.raises(ValueError, match='num_classes must be a positive int'):
        TRANSFORMS.build(dict(type='LoadCheckedSegAnnotations', num_classes=0))


def test_import_mmmila_registers_the_segmentation_classes():
    """Configs name the classes through `custom_imports=['mmmila']` only (fresh interpreter)."""
    import subprocess
    import sys
    code = ('import mmmila; from mmseg.registry import DATASETS, TRANSFORMS; '
            "print('ADE20KCheckedDataset' in DATASETS.module_dict, "
            "'LoadCheckedSegAnnotations' in TRANSFORMS.module_dict)")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    # The last line: a library may print on import (OneDL's mmseg prints 'Could not import OneDL').
    assert out.splitlines()[-1].split() == ['True', 'True'], \
        'import mmmila must register them (mmmila.registry.register_defaults)'


def test_registration_is_idempotent():
    from mmmila.datasets.ade20k import ADE20KCheckedDataset
    from mmmila.registry import register, register_defaults
    register_defaults()
    register_defaults()
    assert register('datasets', ADE20KCheckedDataset, libraries=('mmseg', 'not_a_library')) == ['mmseg']
    assert DATASETS.get('ADE20KCheckedDataset') is ADE20KCheckedDataset
