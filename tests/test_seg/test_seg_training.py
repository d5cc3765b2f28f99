"""End to end through the shell launchers: the toy run learns, and its checkpoint serves mmseg's APIs.

tools/test.sh scores the untrained model (its initial weights saved as a checkpoint), tools/train.sh
trains the shipped toy config (300 iterations), tools/test.sh scores the result; then
MMSegInferencer segments a real photo with the trained checkpoint and saves the drawing.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

from ..conftest import REPO, seed_for
from .conftest import TOY_CONFIG

METRICS = re.compile(r'Iter\(test\).*?aAcc: ([\d.]+)\s+mIoU: ([\d.]+)\s+mAcc: ([\d.]+)')


def launch(*args: str, cwd, env: dict | None = None) -> str:
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1', **(env or {}))
    proc = subprocess.run(['bash', *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=1500)
    assert proc.returncode == 0, f'{args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    return proc.stdout + proc.stderr


def parse_metrics(output: str) -> dict:
    found = METRICS.findall(output)
    assert found, output[-2000:]
    return dict(zip(('aAcc', 'mIoU', 'mAcc'), map(float, found[-1])))


@pytest.mark.slow
def test_toy_training_raises_miou_and_serves_inference(tmp_path, make_toy):
    from mmseg.apis import MMSegInferencer
    from mmseg.registry import MODELS
    from skimage import data

    root = make_toy(tmp_path / 'ADEChallengeData2016', seed=seed_for(0))  # 40 training, 8 validation images
    options = ['--cfg-options'] + [f'{name}.dataset.data_root={root}' for name in
                                   ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    train_sh, test_sh = str(REPO / 'tools' / 'train.sh'), str(REPO / 'tools' / 'test.sh')

    cfg = Config.fromfile(TOY_CONFIG)
    untrained = MODELS.build(cfg.model)
    untrained.init_weights()
    init_ckpt = tmp_path / 'untrained.pth'
    torch.save({'state_dict': untrained.state_dict(), 'meta': {}}, init_ckpt)
    before = parse_metrics(launch(test_sh, str(TOY_CONFIG), str(init_ckpt), '1',
                                 '--work-dir', str(tmp_path / 'test0'), *options, cwd=tmp_path))

    work = tmp_path / 'train'
    launch(train_sh, str(TOY_CONFIG), '1', '--work-dir', str(work), *options, f'randomness.seed={seed_for(0)}',
           cwd=tmp_path)
    checkpoint = work / 'iter_300.pth'
    assert checkpoint.is_file()
    after = parse_metrics(launch(test_sh, str(TOY_CONFIG), str(checkpoint), '1',
                                '--work-dir', str(tmp_path / 'test1'), *options, cwd=tmp_path))
    assert after['mIoU'] > before['mIoU'] + 30, (before, after)
    assert after['aAcc'] > 85, after

    photo = tmp_path / 'chelsea.jpg'
    Image.fromarray(data.chelsea()).save(photo, quality=95)
    inferencer = MMSegInferencer(model=str(TOY_CONFIG), weights=str(checkpoint), device='cpu')
    result = inferencer(str(photo), out_dir=str(tmp_path / 'vis'), return_datasamples=True)
    pred = result.pred_sem_seg.data
    assert pred.shape == (1, 300, 451)
    drawn = np.array(Image.open(tmp_path / 'vis' / 'vis' / 'chelsea.jpg'))
    assert drawn.shape == (300, 451, 3)
