"""A downloaded .pth whose unpickling runs code is refused on every loading path, unless trusted."""
from __future__ import annotations

import subprocess
import sys

import pytest
from mmengine.config import Config

from mmmila.checkpoint import TRUST_ENV, UntrustedCheckpointError
from mmmila.models import MILA

from ..conftest import REPO, TINY_ARCH
from .helpers import save_payload_checkpoint, toy_runner


def tiny_classifier_config() -> Config:
    return Config(dict(
        default_scope='mmpretrain',
        model=dict(type='ImageClassifier',
                   backbone=dict(type='MILA', arch=TINY_ARCH, out_indices=(3,), drop_path_rate=0.0),
                   neck=dict(type='GlobalAveragePooling'),
                   head=dict(type='LinearClsHead', num_classes=10, in_channels=256)),
        test_pipeline=[dict(type='PackInputs')]))


def tiny_detector_config() -> Config:
    cfg = Config.fromfile(str(REPO / 'configs' / 'mask_rcnn_mila_t_1x.py'))
    cfg.model.backbone.arch = TINY_ARCH
    cfg.model.neck.in_channels = [32, 64, 128, 256]
    return cfg


def pretrained_init_cfg(path, tmp_path):
    MILA(arch=TINY_ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(path))).init_weights()


def runner_load_from(path, tmp_path):
    toy_runner(tmp_path / 'work', max_iters=2, load_from=str(path)).load_or_resume()


def classification_inferencer(path, tmp_path):
    from mmpretrain.apis import ImageClassificationInferencer
    ImageClassificationInferencer(tiny_classifier_config(), pretrained=str(path))


def init_detector(path, tmp_path):
    from mmdet.apis import init_detector as init
    init(tiny_detector_config(), str(path), device='cpu')


def detection_inferencer(path, tmp_path):
    from mmdet.apis import DetInferencer
    DetInferencer(tiny_detector_config(), weights=str(path), device='cpu', show_progress=False)


def convert_tool(path, tmp_path):
    """The command line, as a user runs it (its stderr is echoed for the test to read)."""
    res = subprocess.run([sys.executable, str(REPO / 'tools' / 'convert_checkpoint.py'), str(path),
                          str(tmp_path / 'converted.pth')], capture_output=True, text=True, timeout=600)
    sys.stderr.write(res.stderr)
    if res.returncode != 0:
        raise SystemExit(1)


PATHS = [pretrained_init_cfg, runner_load_from, classification_inferencer, init_detector,
         detection_inferencer, convert_tool]


@pytest.mark.parametrize('load', PATHS, ids=[f.__name__ for f in PATHS])
def test_payload_refused_unless_trusted(load, tmp_path, monkeypatch, capsys):
    downloads = tmp_path / 'downloads'
    downloads.mkdir()
    marker = tmp_path / 'payload_ran'
    path = save_payload_checkpoint(downloads / 'model.pth', marker)

    if load is convert_tool:  # a command-line tool: the error is its one-line message, exit code 1
        with pytest.raises(SystemExit):
            load(path, tmp_path)
        err = capsys.readouterr().err
        assert f'untrusted checkpoint {path}' in err and TRUST_ENV in err
        assert not (tmp_path / 'converted.pth').exists()
    else:
        with pytest.raises(UntrustedCheckpointError, match=f'untrusted checkpoint {path}.*{TRUST_ENV}'):
            load(path, tmp_path)
    assert not marker.exists()

    monkeypatch.setenv(TRUST_ENV, str(path))
    try:
        load(path, tmp_path)
    except (Exception, SystemExit):  # noqa: B014 - the file's weights do not fit: it was read all the same
        pass
    assert marker.read_text() == 'unpickled'
