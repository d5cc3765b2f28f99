"""Evaluate a checkpoint on an mmmila config's test set (detection, segmentation or classification).

Metrics come from the config's ``test_evaluator`` (COCO bbox/segm AP, mIoU, top-1). With
``--format-only --out-dir DIR`` the predictions are written as submission files instead (COCO
``*.bbox.json`` / ``*.segm.json`` for detection, PNG masks for segmentation). Usually started by
``tools/test.sh CONFIG CHECKPOINT GPUS [args]``.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from mmmila.utils.coco_format import CocoFormatError
from mmmila.utils.input_checks import InputError, check_run_inputs
from mmmila.utils.run_setup import (LaunchError, detect_task, set_dataloader_defaults, set_format_only,
                                    set_show_dir, set_work_dir, setup_launcher, wrap_tta)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a checkpoint of an mmmila config.')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file to evaluate')
    parser.add_argument('--work-dir', help='where the log and metrics go '
                        '(default: the config\'s work_dir, else ./work_dirs/<config name>)')
    parser.add_argument('--format-only', action='store_true',
                        help='write submission files into --out-dir instead of computing metrics '
                        '(e.g. on COCO test-dev)')
    parser.add_argument('--out-dir', help='directory for the --format-only result files')
    parser.add_argument('--tta', action='store_true',
                        help="test-time augmentation with the config's tta_model and tta_pipeline")
    parser.add_argument('--show-dir', help='save images with the predictions drawn into this directory')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config entries, e.g. test_evaluator.ann_file=PATH')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher (tools/test.sh sets it)')
    parser.add_argument('--no-input-check', action='store_true',
                        help='skip checking data folders, annotation files and the checkpoint path')
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
        if args.out_dir and not args.format_only:
            raise LaunchError('--out-dir is the directory of --format-only result files; '
                              'add --format-only (or use --work-dir for logs and metrics)')
        set_work_dir(cfg, args.work_dir, args.config)
        set_dataloader_defaults(cfg, task)
        cfg.load_from = args.checkpoint
        if args.format_only:
            prefix = osp.splitext(osp.basename(args.config))[0]
            set_format_only(cfg, task, args.out_dir, prefix)
        if args.show_dir:
            set_show_dir(cfg, task, args.show_dir)
        if not args.no_input_check:
            check_run_inputs(cfg, 'test', checkpoint=args.checkpoint,
                             deep=os.environ.get('RANK', '0') == '0')
        if args.tta:
            wrap_tta(cfg, args.config)
        setup_launcher(cfg, args.launcher)
    except (LaunchError, InputError, CocoFormatError) as err:
        sys.exit(f'tools/test.py: error: {err}')
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.test()


if __name__ == '__main__':
    main()
