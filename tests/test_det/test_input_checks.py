"""Bad input stops a detection run early, with a message naming the path and what was expected."""
from __future__ import annotations

import json

import pytest
from mmengine.config import Config

from mmmila.utils.coco_format import CocoFormatError, validate_coco_instances
from mmmila.utils.input_checks import InputError, check_run_inputs

from ..conftest import run_tool_unchecked
from .conftest import DET_CONFIGS, data_options


def write(path, obj):
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


GOOD = dict(images=[dict(id=1, file_name='a.png', width=8, height=8)],
            annotations=[dict(id=1, image_id=1, category_id=3, bbox=[0, 0, 2, 2],
                              segmentation=[[0, 0, 2, 0, 2, 2]])],
            categories=[dict(id=3, name='cat')])


@pytest.mark.parametrize('content, message', [
    ('not json at all', 'not valid JSON'),
    ([{'image_id': 1, 'bbox': [0, 0, 1, 1], 'score': 0.9}], 'holds a JSON list'),
    ({k: v for k, v in GOOD.items() if k != 'annotations'}, "missing top-level keys ['annotations']"),
    (dict(GOOD, images=[dict(id=1, file_name='a.png')]), "images[0] lacks ['width', 'height']"),
    (dict(GOOD, annotations=[dict(GOOD['annotations'][0], bbox=[0, 0, 2])]), 'not [x, y, width, height]'),
    (dict(GOOD, annotations=[dict(GOOD['annotations'][0], category_id=9)]), 'category_id 9'),
    (dict(GOOD, annotations=[dict(GOOD['annotations'][0], image_id=5)]), 'image_id 5'),
])
def test_coco_format_errors_name_file_and_problem(tmp_path, content, message):
    path = write(tmp_path / 'ann.json', content)
    with pytest.raises(CocoFormatError) as err:
        validate_coco_instances(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_coco_format_accepts_good_files_and_test_dev_image_lists(tmp_path):
    summary = validate_coco_instances(write(tmp_path / 'a.json', GOOD), require_masks=True)
    assert summary['categories'] == ['cat']
    image_list = {k: v for k, v in GOOD.items() if k != 'annotations'}
    assert validate_coco_instances(write(tmp_path / 'b.json', image_list), require_annotations=False)[
        'num_annotations'] == 0
    with pytest.raises(CocoFormatError, match=r"classes \['dog'\] are not categories"):
        validate_coco_instances(tmp_path / 'a.json', classes=['dog'])
    ann = {k: v for k, v in GOOD['annotations'][0].items() if k != 'segmentation'}
    no_mask = dict(GOOD, annotations=[ann])
    with pytest.raises(CocoFormatError, match='segmentation'):
        validate_coco_instances(write(tmp_path / 'c.json', no_mask), require_masks=True)


def toy_cfg(root) -> Config:
    cfg = Config.fromfile(str(DET_CONFIGS['t_3x']))
    cfg.merge_from_dict(data_options(root))
    return cfg


def test_missing_data_root_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as err:
        check_run_inputs(Config.fromfile(str(DET_CONFIGS['t_3x'])), 'train')
    text = str(err.value)
    assert 'train_dataloader.dataset.data_root' in text and 'data/coco/' in text and 'does not exist' in text
    assert 'COCO 2017' in text and str(tmp_path) in text


def test_missing_pretrained_checkpoint_is_named(toy_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = toy_cfg(toy_root)
    with pytest.raises(InputError) as err:
        check_run_inputs(cfg, 'train')
    assert 'model.backbone.init_cfg.checkpoint' in str(err.value) and 'data/MLLA_T.pth' in str(err.value)
    assert 'MLLA_{T,S,B}.pth' in str(err.value)
    (tmp_path / 'data').mkdir()
    (tmp_path / 'data' / 'MLLA_T.pth').write_bytes(b'')
    check_run_inputs(cfg, 'train')  # everything in place: no error


def test_missing_image_folder_and_test_checkpoint_are_named(toy_root, tmp_path):
    cfg = toy_cfg(toy_root)
    cfg.test_dataloader.dataset.data_prefix.img = 'test2017/'
    message = r'test_dataloader.dataset.data_prefix.img: .*test2017/ does not exist'
    with pytest.raises(InputError, match=message):
        check_run_inputs(cfg, 'test', checkpoint=str(tmp_path / 'x.pth'))
    cfg = toy_cfg(toy_root)
    with pytest.raises(InputError, match=r'CHECKPOINT: .*x\.pth does not exist'):
        check_run_inputs(cfg, 'test', checkpoint=str(tmp_path / 'x.pth'))


def test_annotation_file_of_wrong_format_is_named(toy_root, tmp_path):
    cfg = toy_cfg(toy_root)
    bad = write(tmp_path / 'results.json', [{'image_id': 0, 'category_id': 1, 'bbox': [0, 0, 1, 1]}])
    cfg.train_dataloader.dataset.ann_file = str(bad)
    cfg.model.backbone.init_cfg = None
    with pytest.raises(CocoFormatError, match=f'{bad}: expected a COCO instances JSON object'):
        check_run_inputs(cfg, 'train')
    # the config's default COCO classes are not the file's categories
    cfg = toy_cfg(toy_root)
    cfg.model.backbone.init_cfg = None
    del cfg.train_dataloader.dataset.metainfo
    with pytest.raises(CocoFormatError, match=r"classes \['person', 'bicycle'"):
        check_run_inputs(cfg, 'train')


def test_train_tool_exits_with_the_message(tmp_path):
    result = run_tool_unchecked('train.py', DET_CONFIGS['b_1x'], '--work-dir', tmp_path / 'w', cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        'tools/train.py: error: train_dataloader.dataset.data_root: data/coco/')
    assert 'Traceback' not in result.stderr
    assert not (tmp_path / 'w').exists()  # stopped before the Runner made anything
