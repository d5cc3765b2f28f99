"""The launchers' config edits for the three tasks (mmmila/utils/run_setup.py), without running."""
from __future__ import annotations

import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mmmila.utils import run_setup
from mmmila.utils.run_setup import LaunchError

from .conftest import DET_CONFIGS


def det_cfg() -> Config:
    return Config.fromfile(str(DET_CONFIGS['t_1x']))


def seg_like() -> Config:
    return Config(dict(default_scope='mmseg', test_evaluator=dict(type='IoUMetric', iou_metrics=['mIoU']),
                       default_hooks=dict(visualization=dict(type='SegVisualizationHook')),
                       visualizer=dict(type='SegLocalVisualizer')))


def cls_like() -> Config:
    return Config(dict(default_scope='mmpretrain', test_evaluator=dict(type='Accuracy'),
                       test_dataloader=dict(batch_size=4),
                       default_hooks=dict(visualization=dict(type='VisualizationHook', enable=False))))


def test_task_comes_from_default_scope():
    assert run_setup.detect_task(det_cfg()) == 'mmdet'
    assert run_setup.detect_task(seg_like()) == 'mmseg'
    with pytest.raises(LaunchError, match="default_scope is 'mmocr'"):
        run_setup.detect_task(Config(dict(default_scope='mmocr')))


def test_format_only_per_task(tmp_path):
    cfg = det_cfg()
    switched = run_setup.set_format_only(cfg, 'mmdet', str(tmp_path / 'out'), 'mask_rcnn_mila_t_1x')
    assert switched == ['CocoMetric']
    assert cfg.test_evaluator.format_only is True
    assert cfg.test_evaluator.outfile_prefix == osp.join(str(tmp_path / 'out'), 'mask_rcnn_mila_t_1x')
    assert (tmp_path / 'out').is_dir()
    assert cfg.val_evaluator.get('format_only') is False  # only the test metric changes
    seg = seg_like()
    run_setup.set_format_only(seg, 'mmseg', str(tmp_path / 'png'), 'x')
    assert seg.test_evaluator.format_only and seg.test_evaluator.output_dir == str(tmp_path / 'png')
    with pytest.raises(LaunchError, match='not supported for classification'):
        run_setup.set_format_only(cls_like(), 'mmpretrain', str(tmp_path), 'x')
    with pytest.raises(LaunchError, match='needs --out-dir'):
        run_setup.set_format_only(det_cfg(), 'mmdet', None, 'x')


def test_tta_needs_the_config_settings_and_wraps_the_model():
    with pytest.raises(LaunchError, match=r'--tta needs tta_model and tta_pipeline in cfg\.py'):
        run_setup.wrap_tta(det_cfg(), 'cfg.py')
    cfg = det_cfg()
    cfg.tta_model = dict(type='DetTTAModel',
                         tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
    cfg.tta_pipeline = [dict(type='LoadImageFromFile'), dict(type='TestTimeAug', transforms=[])]
    backbone = cfg.model.backbone.type
    run_setup.wrap_tta(cfg, 'cfg.py')
    assert cfg.model.type == 'DetTTAModel' and cfg.model.module.backbone.type == backbone
    assert cfg.test_dataloader.dataset.pipeline[1]['type'] == 'TestTimeAug'


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU-only behaviour')
def test_cpu_runs_use_gloo_and_refuse_amp():
    cfg = det_cfg()
    assert cfg.env_cfg.dist_cfg.backend == 'nccl'
    run_setup.setup_launcher(cfg, 'none')
    assert cfg.launcher == 'none' and cfg.env_cfg.dist_cfg.backend == 'gloo'
    with pytest.raises(LaunchError, match='--launcher slurm needs CUDA'):
        run_setup.setup_launcher(det_cfg(), 'slurm')
    with pytest.raises(LaunchError, match='--amp needs a GPU'):
        run_setup.enable_amp(det_cfg())


def test_resume_and_work_dir():
    cfg = det_cfg()
    run_setup.set_resume(cfg, 'auto')
    assert cfg.resume is True and cfg.load_from is None
    run_setup.set_resume(cfg, 'w/epoch_3.pth')
    assert cfg.load_from == 'w/epoch_3.pth'
    run_setup.set_work_dir(cfg, None, 'configs/mask_rcnn_mila_t_1x.py')
    assert cfg.work_dir == osp.join('./work_dirs', 'mask_rcnn_mila_t_1x')
    run_setup.set_work_dir(cfg, 'elsewhere', 'configs/mask_rcnn_mila_t_1x.py')
    assert cfg.work_dir == 'elsewhere'


def test_show_dir_per_task(tmp_path):
    cfg = det_cfg()
    run_setup.set_show_dir(cfg, 'mmdet', str(tmp_path / 'vis'))
    assert cfg.default_hooks.visualization.draw is True
    assert cfg.default_hooks.visualization.test_out_dir == str(tmp_path / 'vis')
    seg = seg_like()
    run_setup.set_show_dir(seg, 'mmseg', 'vis')
    assert seg.visualizer.save_dir == osp.abspath('vis') and seg.default_hooks.visualization.draw
    cls = cls_like()
    run_setup.set_show_dir(cls, 'mmpretrain', 'vis')
    hook = cls.default_hooks.visualization
    assert hook.enable and hook.out_dir == osp.abspath('vis')
    run_setup.set_dataloader_defaults(cls, 'mmpretrain')
    assert cls.test_dataloader.collate_fn == dict(type='default_collate')


def test_close_process_group_destroys_the_group(tmp_path):
    """The tools end every finished run with it (gloo threads left at exit can abort the process)."""
    import torch.distributed as dist
    run_setup.close_process_group()                       # nothing to close: a no-op
    dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0, world_size=1)
    assert dist.is_initialized()
    run_setup.close_process_group()
    assert not dist.is_initialized()
