"""A detector trained through tools/train.sh: killed, resumed with --resume, then used for inference."""
from __future__ import annotations

import hashlib
import time

import pytest

from ..conftest import seed_for
from ..test_checkpoint.train_hooks import STOP_ENV
from .test_launchers import TRAIN_SH, narrow_config, run


def digests(work_dir) -> dict:
    """sha256 of every file under ``work_dir`` (relative path -> digest)."""
    return {str(p.relative_to(work_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(work_dir.rglob('*')) if p.is_file()}


@pytest.mark.slow
def test_killed_run_resumes_and_its_checkpoint_serves_inference(toy_root, tmp_path, monkeypatch):
    config = tmp_path / 'resume_det_config.py'
    narrow_config(config, toy_root, tmp_path, **{
        'custom_imports': dict(imports=['mmmila', 'tests.test_checkpoint.train_hooks'],
                               allow_failed_imports=False),
        'custom_hooks': [dict(type='MMMILATestKillAfter')],
        'train_dataloader.dataset.indices': 2, 'train_dataloader.batch_size': 1,  # 2 iterations per epoch
        'train_cfg.max_epochs': 3,
        'default_hooks.checkpoint': dict(type='CheckpointHook', interval=1), 'randomness': dict(seed=seed_for(0))})
    work = tmp_path / 'work'

    monkeypatch.setenv(STOP_ENV, '3')   # the process dies in epoch 2, after epoch_1.pth was written
    killed = run(['bash', TRAIN_SH, config, '1', '--work-dir', work])
    assert killed.returncode == 3, killed.stderr[-3000:]
    assert sorted(p.name for p in work.glob('*.pth')) == ['epoch_1.pth']
    before = digests(work)
    first_run = next(p.parent.name for p in work.glob('*/*.log'))
    while time.strftime('%Y%m%d_%H%M%S') <= first_run:  # mmengine names a run's folder by its second
        time.sleep(0.1)

    monkeypatch.delenv(STOP_ENV)
    resumed = run(['bash', TRAIN_SH, config, '1', '--work-dir', work, '--resume'])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    logs = {p.parent.name: p.read_text() for p in work.glob('*/*.log')}
    assert len(logs) == 2
    new_log = next(text for name, text in logs.items() if name != first_run)
    assert 'resumed epoch: 1, iter: 2' in new_log
    assert 'Epoch(train) [2][1/2]' in new_log and 'Epoch(train) [1][' not in new_log
    assert sorted(p.name for p in work.glob('*.pth')) == ['epoch_1.pth', 'epoch_2.pth', 'epoch_3.pth']
    after = digests(work)
    pointers = {'last_checkpoint', config.name}  # mmengine's pointers to the latest run
    assert {k: after.get(k) for k in before if k not in pointers} == \
        {k: v for k, v in before.items() if k not in pointers}   # nothing of the first run overwritten

    # The final checkpoint in mmdet's inference APIs (the run's own file: trusted explicitly).
    import mmmila  # noqa: F401
    from mmdet.apis import DetInferencer, inference_detector, init_detector
    from mmmila.checkpoint import trusted_paths

    image = str(sorted((toy_root / 'val').glob('*.png'))[0])
    with trusted_paths(str(work)):
        model = init_detector(str(config), str(work / 'epoch_3.pth'), device='cpu')
        inferencer = DetInferencer(str(config), weights=str(work / 'epoch_3.pth'), device='cpu',
                                   show_progress=False)
    result = inference_detector(model, image)
    assert model.dataset_meta['classes'] == ('square', 'circle', 'triangle', 'star')
    assert len(result.pred_instances) > 0 and result.pred_instances.masks.shape[-2:] == (64, 64)
    preds = inferencer(image, return_datasamples=False)['predictions'][0]
    assert len(preds['bboxes']) == len(result.pred_instances)
