"""tools/test.sh --format-only with 2 processes (DDP over gloo on the CPU): one whole PNG per image."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ..conftest import REPO, seed_for
from .conftest import TOY_CONFIG


@pytest.mark.slow
def test_format_only_with_two_processes_writes_each_png_once(make_toy, tmp_path):
    """3 test images on 2 processes: the sampler's padding would give one image to both of them."""
    from mmengine.config import Config
    from mmseg.registry import MODELS
    root = make_toy(tmp_path / 'ade' / 'ADEChallengeData2016', num_train=2, num_val=2, num_test=3,
                    seed=seed_for(0))
    torch.manual_seed(seed_for(1))
    model = MODELS.build(Config.fromfile(str(TOY_CONFIG)).model)  # (SyncBN and BN hold the same weights)
    checkpoint = tmp_path / 'toy.pth'
    torch.save({'state_dict': model.state_dict()}, checkpoint)
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    out, work = tmp_path / 'pngs', tmp_path / 'work'
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1', PORT=str(port))
    result = subprocess.run(
        ['bash', str(REPO / 'tools' / 'test.sh'), str(TOY_CONFIG), str(checkpoint), '2', '--work-dir', str(work),
         '--format-only', '--out-dir', str(out), '--cfg-options', f'test_dataloader.dataset.data_root={root}',
         'test_dataloader.dataset.data_prefix.img_path=images/testing',
         'test_dataloader.dataset.data_prefix.seg_map_path=None',
         # torch's DDP takes SyncBN on GPU modules only; testing runs the norms as plain BN anyway
         'model.decode_head.norm_cfg.type=BN', 'model.auxiliary_head.norm_cfg.type=BN'],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    images = sorted((root / 'images' / 'testing').glob('*.jpg'))
    assert sorted(p.name for p in out.iterdir()) == [f'{p.stem}.png' for p in images]
    for image in images:
        with Image.open(out / f'{image.stem}.png') as png:
            ids = np.array(png)
            assert png.size == Image.open(image).size and ids.min() >= 1 and ids.max() <= 150
    for path in work.glob('*/*.json'):
        json.loads(path.read_text())
