"""``tools/train.sh --resume`` after a killed run: a tiny MILA classifier on a folder of small images."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from ..conftest import REPO, seed_for
from .helpers import snapshot
from .train_hooks import STOP_ENV

TRAIN_SH = REPO / 'tools' / 'train.sh'
CONFIG = REPO / 'tests' / 'test_checkpoint' / 'resume_cls_config.py'


def make_images(root) -> None:
    from PIL import Image
    rng = np.random.default_rng(seed_for(0))
    for label in ('a', 'b'):
        (root / label).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / label / f'{i}.png')


def train(work_dir, data_root, *args, stop_after=None):
    python_path = os.pathsep.join(p for p in (str(REPO), os.environ.get('PYTHONPATH')) if p)
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=python_path, OMP_NUM_THREADS='1')
    env.pop(STOP_ENV, None)
    if stop_after is not None:
        env[STOP_ENV] = str(stop_after)
    cmd = ['bash', str(TRAIN_SH), str(CONFIG), '1', '--work-dir', str(work_dir),
           '--cfg-options', f'train_dataloader.dataset.data_root={data_root}', *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def run_logs(work_dir) -> dict:
    return {p.parent.name: p.read_text() for p in work_dir.glob('*/*.log')}


@pytest.mark.slow
def test_train_sh_resume_after_kill(tmp_path):
    data = tmp_path / 'images'
    make_images(data)
    reference, work_dir = tmp_path / 'reference', tmp_path / 'work'
    done = train(reference, data)
    assert done.returncode == 0, done.stderr[-3000:]

    killed = train(work_dir, data, stop_after=3)
    assert killed.returncode == 3, killed.stderr[-3000:]
    assert (work_dir / 'last_checkpoint').read_text().strip().endswith('iter_2.pth')
    assert not (work_dir / 'iter_4.pth').exists()
    before = snapshot(work_dir)
    first_run = next(iter(run_logs(work_dir)))
    while time.strftime('%Y%m%d_%H%M%S') <= first_run:  # mmengine names a run's log folder by its second
        time.sleep(0.1)

    resumed = train(work_dir, data, '--resume')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = run_logs(work_dir)
    assert len(log) == 2
    new_log = next(text for name, text in log.items() if name != first_run)
    assert 'resumed epoch: 0, iter: 2' in new_log
    assert 'unpickling it fully, as it is trusted' in new_log  # the hook's object needed the work_dir's trust
    assert 'Epoch(train) [1][3/' in new_log and 'Epoch(train) [1][1/' not in new_log

    # Nothing overwritten or lost: every file of the killed run is still there, unchanged, except the
    # two that mmengine keeps as pointers to the latest run (its config dump in the work_dir root; each
    # run's own config stays in its <timestamp>/vis_data/) and the latest checkpoint.
    after = snapshot(work_dir)
    latest = {'last_checkpoint', CONFIG.name}
    kept = {k: v for k, v in before.items() if k not in latest}
    assert {k: after.get(k) for k in kept} == kept
    assert f'{first_run}/vis_data/config.py' in before
    ours = torch.load(work_dir / 'iter_6.pth', weights_only=False)  # this test's own files
    ref = torch.load(reference / 'iter_6.pth', weights_only=False)
    assert ours['meta']['iter'] == ref['meta']['iter'] == 6
    for key, value in ref['state_dict'].items():
        torch.testing.assert_close(ours['state_dict'][key], value, rtol=1e-5, atol=1e-6, msg=key)
    for idx, slots in ref['optimizer']['state'].items():
        for name, value in slots.items():
            torch.testing.assert_close(ours['optimizer']['state'][idx][name], value, rtol=1e-5, atol=1e-7)
