"""tools/train.sh and tools/test.sh on detection: leaderboard files, DDP over gloo on CPU, the demo."""
from __future__ import annotations

import json
import re
import subprocess

import pytest
import torch

from ..conftest import REPO, seed_for
from .conftest import DET_CONFIGS, TOY_CLASSES, tool_env, toy_step_config
from .ddp_probe import split_checksums

TRAIN_SH, TEST_SH = REPO / 'tools' / 'train.sh', REPO / 'tools' / 'test.sh'


def narrow_config(path, root, tmp_path, **changes):
    """Write the shipped 3x config, shrunk for CPU and pointed at the toy set, to ``path``."""
    cfg = toy_step_config(DET_CONFIGS['t_3x'], root, tmp_path / 'unused')
    cfg.model.test_cfg.rpn.max_per_img = 100
    cfg.merge_from_dict(changes)
    cfg.dump(str(path))
    return cfg


def run(cmd, timeout=900):
    return subprocess.run([str(c) for c in cmd], cwd=REPO, env=tool_env(), capture_output=True, text=True,
                          timeout=timeout)


def test_format_only_writes_leaderboard_json_for_test_dev(toy_root, tmp_path):
    """A test-dev style image list (no annotations): tools/test.sh writes .bbox.json / .segm.json."""
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope
    from pycocotools.coco import COCO
    config = tmp_path / 'mask_rcnn_mila_t_3x.py'
    cfg = narrow_config(config, toy_root, tmp_path)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    checkpoint = tmp_path / 'narrow.pth'
    meta = {'dataset_meta': {'classes': TOY_CLASSES}}
    torch.save({'state_dict': model.state_dict(), 'meta': meta}, checkpoint)
    val = json.loads((toy_root / 'annotations' / 'instances_val.json').read_text())
    image_info = tmp_path / 'image_info_test.json'
    image_info.write_text(json.dumps({k: v for k, v in val.items() if k != 'annotations'}))

    out = tmp_path / 'submission'
    result = run(['bash', TEST_SH, config, checkpoint, '1', '--work-dir', tmp_path / 'work',
                  '--format-only', '--out-dir', out, '--cfg-options',
                  f'test_dataloader.dataset.ann_file={image_info}', f'test_evaluator.ann_file={image_info}'])
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        'mask_rcnn_mila_t_3x.bbox.json', 'mask_rcnn_mila_t_3x.segm.json']
    gt = COCO(str(image_info))
    image_ids, cat_ids = set(gt.getImgIds()), set(gt.getCatIds())
    for kind in ('bbox', 'segm'):
        dets = json.loads((out / f'mask_rcnn_mila_t_3x.{kind}.json').read_text())
        assert dets and {d['image_id'] for d in dets} <= image_ids
        assert {d['category_id'] for d in dets} <= cat_ids
        assert all(len(d['bbox']) == 4 and 0.0 <= d['score'] <= 1.0 for d in dets)
        if kind == 'segm':
            rles = [d['segmentation'] for d in dets]
            assert all(set(r) == {'size', 'counts'} and isinstance(r['counts'], str) for r in rles)
        gt.loadRes(str(out / f'mask_rcnn_mila_t_3x.{kind}.json'))  # the format COCO's tools accept
    assert 'coco/bbox_mAP' not in result.stdout + result.stderr  # written, not scored


def test_test_sh_rejects_bad_usage(tmp_path):
    result = run(['bash', TEST_SH, DET_CONFIGS['t_3x'], tmp_path / 'none.pth'])
    assert result.returncode == 2 and 'usage:' in result.stderr
    result = run(['bash', TRAIN_SH, DET_CONFIGS['t_3x'], 'two'])
    assert result.returncode == 2 and "GPUS must be a positive integer" in result.stderr


def test_train_sh_missing_data_stops_once_before_spawning(tmp_path):
    """The mission's command without data/coco/: one sentence, before torchrun starts 8 processes."""
    env = tool_env()
    result = subprocess.run(['bash', str(TRAIN_SH), str(DET_CONFIGS['t_3x']), '8'], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert output.count('data/coco/') >= 1 and output.count('does not exist') == 1, output[-3000:]
    errors = [line for line in output.splitlines() if line.strip()]
    assert len(errors) <= 2, errors   # the error line, at most one line of context
    assert errors[-1].startswith('tools/train.py: error: ') and 'COCO' in errors[-1]
    for noise in ('ChildFailedError', 'Traceback', 'pkg_resources', 'torch.distributed.run'):
        assert noise not in output
    assert not (tmp_path / 'work_dirs').exists()   # nothing was started


@pytest.mark.slow
def test_train_sh_two_processes_run_ddp_over_gloo(toy_root, tmp_path):
    """GPUS=2 on CPU: two ranks train on different images and end with identical weights."""
    config = tmp_path / 'ddp_probe_config.py'
    narrow_config(config, toy_root, tmp_path, **{
        'custom_imports': dict(imports=['mmmila', 'tests.test_det.ddp_probe'], allow_failed_imports=False),
        'custom_hooks': [dict(type='DDPProbeHook')], 'train_dataloader.dataset.indices': 4,
        'train_dataloader.batch_size': 1, 'train_cfg.max_epochs': 2,
        'default_hooks.checkpoint': dict(type='CheckpointHook', interval=2), 'randomness': dict(seed=seed_for(0))})
    work = tmp_path / 'work'
    result = run(['bash', TRAIN_SH, config, '2', '--work-dir', work], timeout=1200)
    assert result.returncode == 0, result.stderr[-4000:]
    logs = '\n'.join(p.read_text() for p in work.glob('*/*.log'))
    assert re.search(r'Distributed launcher: pytorch\s+Distributed training: True\s+GPU number: 2', logs)
    assert 'backend: gloo' in logs or "backend='gloo'" in logs
    probes = [json.loads((work / f'probe_rank{r}.json').read_text()) for r in (0, 1)]
    assert [p['rank'] for p in probes] == [0, 1] and all(p['world_size'] == 2 for p in probes)
    assert all(p['iter'] == 4 for p in probes)  # 2 epochs x (4 images / 2 ranks / batch 1)
    assert probes[0]['img_ids'] != probes[1]['img_ids']  # the sampler split the data
    assert set(probes[0]['img_ids'][:2]).isdisjoint(probes[1]['img_ids'][:2])
    assert probes[0]['params'] == probes[1]['params']  # gradients were averaged: same parameters
    # BatchNorm statistics come from each rank's own images (broadcast_buffers=False, as the authors')
    assert probes[0]['bn_stats'] != probes[1]['bn_stats']
    # one checkpoint, written once (by rank 0), holding those weights
    assert sorted(p.name for p in work.glob('*.pth')) == ['epoch_2.pth']
    assert (work / 'last_checkpoint').read_text().strip().endswith('epoch_2.pth')
    saved = torch.load(work / 'epoch_2.pth', map_location='cpu', weights_only=False)  # this test's own file
    params, bn_stats = split_checksums(saved['state_dict'])
    assert params == pytest.approx(probes[0]['params'], rel=1e-9)
    assert bn_stats == pytest.approx(probes[0]['bn_stats'], rel=1e-9)  # rank 0's statistics
    assert saved['meta']['iter'] == 4


@pytest.mark.slow
def test_demo_pipeline_end_to_end(tmp_path):
    """tools/demo.sh with a 2-iteration training: data, DDP training, evaluation, inference, summary."""
    env = tool_env()
    env.update(DEMO_WORK_DIR=str(tmp_path / 'demo'), DEMO_NUM_TRAIN='8', DEMO_NUM_VAL='3',
               DEMO_CFG_OPTIONS='train_cfg.max_epochs=1')
    result = subprocess.run(['bash', str(REPO / 'tools' / 'demo.sh')], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=1500)
    assert result.returncode == 0, result.stderr[-4000:]
    out = result.stdout
    assert '== mmmila demo: done in' in out
    loss = re.search(r'training loss\s+([\d.]+) \(first logged\) -> ([\d.]+)', out)
    ap = re.search(r'toy val bbox AP\s+([\d.]+)', out)
    assert loss and ap and 0.0 <= float(ap.group(1)) <= 1.0
    demo = tmp_path / 'demo'
    assert (demo / 'train' / 'epoch_1.pth').is_file()
    assert json.loads((demo / 'toy_coco' / 'annotations' / 'instances_val.json').read_text())['categories']
    drawn = sorted(p.name for p in (demo / 'inference' / 'vis').iterdir())
    assert drawn == ['000000.png', '000001.png', '000002.png', 'astronaut.png', 'coffee.png']
    preds = json.loads((demo / 'inference' / 'preds' / 'astronaut.json').read_text())
    assert set(preds) >= {'labels', 'scores', 'bboxes', 'masks'}
    assert str(demo / 'inference' / 'vis') in out
