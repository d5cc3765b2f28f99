"""Train an mmmila config with mmengine's Runner (detection, segmentation or classification).

The task comes from the config's ``default_scope`` ('mmdet', 'mmseg' or 'mmpretrain'). Usually
started by ``tools/train.sh CONFIG GPUS [args]``; on its own it trains in one process::

    python tools/train.py configs/mask_rcnn_mila_t_3x.py --work-dir work_dirs/t3x
"""
from __future__ import annotations

import argparse
import os
import sys

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from mmmila.utils.coco_format import CocoFormatError
from mmmila.utils.input_checks import InputError, check_run_inputs
from mmmila.utils.run_setup import (LaunchError, detect_task, enable_amp, set_dataloader_defaults,
                                    set_resume, set_work_dir, setup_launcher)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model from an mmmila config.')
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: the config\'s work_dir, else ./work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', const='auto', default=None, metavar='CHECKPOINT',
                        help='resume from CHECKPOINT, or without a value from the latest checkpoint '
                        'in the work dir')
    parser.add_argument('--amp', action='store_true', help='mixed-precision training (needs a GPU)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config entries, e.g. model.backbone.init_cfg.checkpoint=PATH')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher (tools/train.sh sets it)')
    parser.add_argument('--no-input-check', action='store_true',
                        help='skip checking data folders, annotation files and checkpoint paths')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        task = detect_task(cfg)
        set_work_dir(cfg, args.work_dir, args.config)
        set_dataloader_defaults(cfg, task)
        if args.amp:
            enable_amp(cfg)
        set_resume(cfg, args.resume)
        if not args.no_input_check:
            # Annotation files are parsed once, by the first process; paths are checked by all.
            check_run_inputs(cfg, 'train', deep=os.environ.get('RANK', '0') == '0')
        setup_launcher(cfg, args.launcher)
    except (LaunchError, InputError, CocoFormatError) as err:
        sys.exit(f'tools/train.py: error: {err}')
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.train()


if __name__ == '__main__':
    main()
