"""Mask R-CNN through tools/train.sh and tools/test.sh with ``--cfg-options compile.backend=aot_eager``.

The tools compile the detector in place (``mmmila.utils.run_setup.compile_model``). mmdet's heads
break dynamo's graphs in many places (NMS, sampling, RoI extraction: data-dependent shapes); the
backbone must not. dynamo + AOTAutograd (``aot_eager``) captures the graphs as inductor would,
without its C++ builds.
"""
from __future__ import annotations

import re

import pytest

from ..test_deploy.helpers import graph_break_files, project_files
from .conftest import DET_CONFIGS, toy_step_config
from .test_launchers import TEST_SH, TRAIN_SH, run

METRIC = re.compile(r'coco/(bbox|segm)_mAP: ([\d.]+)')


@pytest.mark.slow
def test_compiled_detector_trains_and_tests_through_the_launchers(toy_root, tmp_path, monkeypatch):
    cfg = toy_step_config(DET_CONFIGS['t_1x'], toy_root, tmp_path / 'train')
    cfg.default_hooks.checkpoint.update(interval=1, save_last=True)
    config = tmp_path / 'mask_rcnn_toy.py'
    cfg.dump(str(config))
    compiled = ['compile.backend=aot_eager']

    with monkeypatch.context() as env:
        env.setenv('TORCH_LOGS', 'graph_breaks')
        train = run(['bash', TRAIN_SH, config, 1, '--cfg-options', *compiled], timeout=1500)
    log = train.stdout + train.stderr
    assert train.returncode == 0, log[-3000:]
    assert 'model compiled with torch.compile' in log
    files = graph_break_files(log)
    assert any('/mmdet/' in f for f in files), 'no graph break logged at all: has the log format changed?'
    assert project_files(files) == [], f'graph breaks inside mmmila: {project_files(files)}'
    losses = [float(v) for v in re.findall(r'Epoch\(train\).*?\sloss: ([\d.]+)', log)]
    assert losses and all(0 < v < 50 for v in losses), losses
    checkpoint = tmp_path / 'train' / 'epoch_1.pth'
    assert checkpoint.is_file()

    metrics = {}
    for name, extra in (('eager', []), ('compiled', ['--cfg-options', *compiled])):
        res = run(['bash', TEST_SH, config, checkpoint, 1, '--work-dir', tmp_path / name, *extra],
                  timeout=1500)
        out = res.stdout + res.stderr
        assert res.returncode == 0, out[-3000:]
        assert ('model compiled with torch.compile' in out) == (name == 'compiled')
        metrics[name] = dict(METRIC.findall(out))
        assert set(metrics[name]) == {'bbox', 'segm'}, out[-2000:]
    assert metrics['compiled'] == metrics['eager']
