"""The shared launchers' Python entry points (tools/train.py, tools/test.py) on the toy ADE20K set.

A 4-iteration toy training gives a checkpoint; tools/test.py then reports aAcc / mIoU / mAcc, writes
the benchmark's PNGs with --format-only, runs the 12-view test with --tta and draws with --show-dir;
mmseg's init_model / inference_model and MMSegInferencer use the checkpoint on a real photo.
"""
from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ..conftest import REPO, run_tool, seed_for
from .conftest import TOY_CONFIG

METRICS = re.compile(r'aAcc: ([\d.]+)\s+mIoU: ([\d.]+)\s+mAcc: ([\d.]+)')


def data_options(root: Path, num_eval: int = 2) -> list[str]:
    return [f'{name}.dataset.data_root={root}' for name in ('train_dataloader', 'val_dataloader',
                                                           'test_dataloader')] + \
        [f'val_dataloader.dataset.indices={num_eval}', f'test_dataloader.dataset.indices={num_eval}']


def logged_metrics(work_dir: Path) -> dict:
    """aAcc / mIoU / mAcc of the last evaluation logged under ``work_dir``."""
    logs = sorted(work_dir.glob('*/*.log'))
    assert logs, f'no log under {work_dir}'
    found = METRICS.findall(logs[-1].read_text())
    assert found, f'no metrics in {logs[-1]}'
    return dict(zip(('aAcc', 'mIoU', 'mAcc'), map(float, found[-1])))


@pytest.fixture(scope='module')
def trained(tmp_path_factory, toy_root):
    """(work dir, checkpoint) of a 4-iteration toy run through tools/train.py."""
    work = tmp_path_factory.mktemp('toy_train')
    run_tool('train.py', TOY_CONFIG, '--work-dir', work, '--cfg-options', *data_options(toy_root),
             'train_cfg.max_iters=4', 'train_cfg.val_interval=4', 'default_hooks.checkpoint.interval=4',
             f'randomness.seed={seed_for(0)}')
    checkpoint = work / 'iter_4.pth'
    assert checkpoint.is_file()
    return work, checkpoint


def run_test_tool(checkpoint, work, root, *extra, options=(), num_eval=2):
    return run_tool('test.py', TOY_CONFIG, checkpoint, '--work-dir', work, *extra, '--cfg-options',
                    *data_options(root, num_eval), *options)


def test_training_validates(trained):
    work, _ = trained
    metrics = logged_metrics(work)
    assert all(0.0 <= value <= 100.0 for value in metrics.values())


def test_test_tool_reports_metrics_and_draws(trained, toy_root, tmp_path):
    _, checkpoint = trained
    # mmseg's hook draws every 50th image by default; a fresh visualizer name, because mmengine keeps
    # one visualizer per name in a process and the training run above made 'visualizer'
    run_test_tool(checkpoint, tmp_path / 'work', toy_root, '--show-dir', str(tmp_path / 'show'),
                  options=['default_hooks.visualization.interval=1', 'visualizer.name=show_dir_test'])
    metrics = logged_metrics(tmp_path / 'work')
    assert set(metrics) == {'aAcc', 'mIoU', 'mAcc'}
    assert all(0.0 <= value <= 100.0 for value in metrics.values())
    drawn = sorted(p.name for p in (tmp_path / 'show').rglob('*.png'))
    assert len(drawn) == 2 and all('ADE_val_0000000' in name for name in drawn), drawn


def test_format_only_writes_benchmark_pngs(trained, toy_root, tmp_path):
    """--format-only on the unlabelled test images: one PNG per image, ADE20K ids 1..150."""
    from mmseg.apis import inference_model, init_model
    _, checkpoint = trained
    out = tmp_path / 'pngs'
    run_test_tool(checkpoint, tmp_path / 'work', toy_root, '--format-only', '--out-dir', str(out),
                  options=['test_dataloader.dataset.data_prefix.img_path=images/testing',
                           'test_dataloader.dataset.data_prefix.seg_map_path=None'])
    images = sorted((toy_root / 'images' / 'testing').glob('*.jpg'))
    assert sorted(p.name for p in out.iterdir()) == [f'{p.stem}.png' for p in images]
    model = init_model(str(TOY_CONFIG), str(checkpoint), device='cpu')
    for image in images:
        png = Image.open(out / f'{image.stem}.png')
        assert png.mode == 'L' and png.size == Image.open(image).size
        ids = np.array(png)
        assert ids.min() >= 1 and ids.max() <= 150
        pred = inference_model(model, str(image)).pred_sem_seg.data[0].numpy()
        np.testing.assert_array_equal(ids, pred + 1)  # class k is written as ADE20K id k + 1


def test_tta_merges_twelve_views(trained, toy_root, tmp_path, monkeypatch):
    from mmseg.models import SegTTAModel
    views = []
    merge = SegTTAModel.merge_preds

    def counting_merge(self, data_samples_list):
        views.extend(len(samples) for samples in data_samples_list)
        return merge(self, data_samples_list)

    monkeypatch.setattr(SegTTAModel, 'merge_preds', counting_merge)
    _, checkpoint = trained
    # in this process, so that the patched merge sees the views: the file runs as `python tools/test.py` runs it
    script = REPO / 'tools' / 'test.py'
    monkeypatch.setattr(sys, 'argv', [str(script), str(TOY_CONFIG), str(checkpoint), '--work-dir',
                                      str(tmp_path / 'work'), '--tta', '--cfg-options', *data_options(toy_root, 1)])
    runpy.run_path(str(script), run_name='__main__')
    assert views == [12]  # 6 scales x 2 flips of the one test image
    assert set(logged_metrics(tmp_path / 'work')) == {'aAcc', 'mIoU', 'mAcc'}


@pytest.fixture(scope='module')
def photo(tmp_path_factory) -> Path:
    """scikit-image's astronaut photo (512x512), saved as a JPEG file."""
    from skimage import data
    path = tmp_path_factory.mktemp('photo') / 'astronaut.jpg'
    Image.fromarray(data.astronaut()).save(path, quality=95)
    return path


def test_init_model_and_inference_model_on_a_photo(trained, photo, tmp_path):
    from mmseg.apis import inference_model, init_model, show_result_pyplot
    _, checkpoint = trained
    model = init_model(str(TOY_CONFIG), str(checkpoint), device='cpu')
    assert len(model.dataset_meta['classes']) == 150
    state = torch.load(checkpoint, map_location='cpu', weights_only=False)['state_dict']
    torch.testing.assert_close(model.state_dict()['decode_head.conv_seg.weight'],
                               state['decode_head.conv_seg.weight'])
    result = inference_model(model, str(photo))
    pred = result.pred_sem_seg.data
    assert pred.shape == (1, 512, 512) and 0 <= int(pred.min()) and int(pred.max()) < 150
    out_file = tmp_path / 'astronaut_seg.jpg'
    drawn = show_result_pyplot(model, str(photo), result, show=False, out_file=str(out_file), opacity=0.5)
    assert out_file.is_file() and drawn.shape == (512, 512, 3)
    assert np.abs(drawn.astype(int) - np.array(Image.open(photo))).mean() > 1  # the mask is drawn


def test_mmseg_inferencer_on_a_photo(trained, photo, tmp_path):
    from mmseg.apis import MMSegInferencer, inference_model, init_model
    _, checkpoint = trained
    inferencer = MMSegInferencer(model=str(TOY_CONFIG), weights=str(checkpoint), device='cpu')
    out = inferencer(str(photo), out_dir=str(tmp_path / 'out'), return_datasamples=True)
    saved = sorted(p.relative_to(tmp_path / 'out').as_posix() for p in (tmp_path / 'out').rglob('*.*'))
    assert 'vis/astronaut.jpg' in saved
    vis = np.array(Image.open(tmp_path / 'out' / 'vis' / 'astronaut.jpg'))
    assert vis.shape == (512, 512, 3)
    model = init_model(str(TOY_CONFIG), str(checkpoint), device='cpu')
    expected = inference_model(model, str(photo)).pred_sem_seg.data
    torch.testing.assert_close(out.pred_sem_seg.data, expected)
