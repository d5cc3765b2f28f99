"""tools/test.sh with 2 processes (DDP over gloo on the CPU): every file the runs write parses."""
from __future__ import annotations

import json
import socket
import subprocess

import pytest
import torch
from PIL import Image

from ..conftest import REPO
from .conftest import TOY_CLASSES, tool_env
from .test_launchers import TEST_SH, narrow_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def check_file(path) -> None:
    """Parse ``path`` by its kind: JSON (or JSON lines), PNG, text; a torn file fails here."""
    if path.suffix == '.json':
        text = path.read_text()
        try:
            json.loads(text)
        except json.JSONDecodeError:  # mmengine's scalars files hold one JSON object per line
            for line in text.splitlines():
                json.loads(line)
    elif path.suffix == '.png':
        with Image.open(path) as image:
            image.load()
    else:
        path.read_text()


@pytest.mark.slow
def test_test_sh_two_processes_write_every_file_whole(toy_root, tmp_path):
    """mmengine's LoggerHook dumps the test metrics on every rank into one file: two writers of one path,
    which sometimes left two JSON objects run together. With the project's hooks rank 0 writes it."""
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope
    config = tmp_path / 'mask_rcnn_mila_t_3x.py'
    cfg = narrow_config(config, toy_root, tmp_path)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    checkpoint = tmp_path / 'narrow.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {'dataset_meta': {'classes': TOY_CLASSES}}}, checkpoint)

    runs = [('--show-dir', tmp_path / f'show{i}') for i in range(3)]
    runs.append(('--format-only', '--out-dir', tmp_path / 'submission'))
    for i, extra in enumerate(runs):
        work = tmp_path / f'work{i}'
        result = subprocess.run(
            ['bash', str(TEST_SH), str(config), str(checkpoint), '2', '--work-dir', str(work), *map(str, extra)],
            cwd=REPO, env=dict(tool_env(), PORT=str(free_port())), capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-4000:]
        written = [p for p in work.rglob('*') if p.is_file()]
        for path in written:
            check_file(path)
        metrics = [p for p in written if p.parent.parent == work and p.suffix == '.json']
        assert len(metrics) == 1
        scores = json.loads(metrics[0].read_text())
        if extra[0] == '--show-dir':
            assert 0.0 <= scores['coco/bbox_mAP'] <= 1.0 and 0.0 <= scores['coco/segm_mAP'] <= 1.0
            drawn = list(extra[1].rglob('*.png'))
            assert drawn
            for path in drawn:
                check_file(path)
    submission = sorted((tmp_path / 'submission').iterdir())
    assert [p.name for p in submission] == ['mask_rcnn_mila_t_3x.bbox.json', 'mask_rcnn_mila_t_3x.segm.json']
    for path in submission:
        assert json.loads(path.read_text())
