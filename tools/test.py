"""Evaluate a checkpoint on an mmmila config's test set (detection, segmentation or classification).

Metrics come from the config's ``test_evaluator`` (COCO bbox/segm AP, mIoU, top-1). With
``--format-only --out-dir DIR`` the predictions are written as submission files instead (COCO
``*.bbox.json`` / ``*.segm.json`` for detection, PNG masks for segmentation). Usually started by
``tools/test.sh CONFIG CHECKPOINT GPUS [args]``.
"""
from __future__ import annotations

import warnings

# setuptools' "pkg_resources is deprecated" notice, raised when mmengine and mmcv are imported (once per
# process): nothing the user can act on. Filtered here, in the tool, before those imports.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)

import argparse
import os.path as osp

from mmmila.utils.cli import (build_runner, is_first_rank, load_config, parse_tool_args, prepare_or_exit,
                              tool_parser)
from mmmila.utils.input_checks import check_run_inputs
from mmmila.utils.run_setup import (LaunchError, close_process_group, compile_options,
                                    detect_task, set_dataloader_defaults, set_format_only, set_show_dir,
                                    set_work_dir, setup_launcher, use_file_safe_hooks, wrap_tta)


def _test_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('checkpoint', help='checkpoint file to evaluate')
    parser.add_argument('--format-only', action='store_true',
                        help='write submission files into --out-dir instead of computing metrics '
                        '(e.g. on COCO test-dev)')
    parser.add_argument('--out-dir', help='directory for the --format-only result files')
    parser.add_argument('--tta', action='store_true',
                        help="test-time augmentation with the config's tta_model and tta_pipeline")
    parser.add_argument('--show-dir', help='save images with the predictions drawn into this directory')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = tool_parser('Test (and evaluate) a checkpoint of an mmmila config.', 'test',
                         'the log and metrics', _test_options)
    return parse_tool_args(parser, argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)

    def prepare():
        task = detect_task(cfg)
        if args.out_dir and not args.format_only:
            raise LaunchError('--out-dir is the directory of --format-only result files; '
                              'add --format-only (or use --work-dir for logs and metrics)')
        set_work_dir(cfg, args.work_dir, args.config)
        set_dataloader_defaults(cfg, task)
        cfg.load_from = args.checkpoint
        use_file_safe_hooks(cfg)
        compile_options(cfg)   # a bad value stops here, with the value named
        if args.format_only:
            prefix = osp.splitext(osp.basename(args.config))[0]
            set_format_only(cfg, task, args.out_dir, prefix)
        if args.show_dir:
            set_show_dir(cfg, task, args.show_dir)
        if not args.no_input_check:
            check_run_inputs(cfg, 'test', checkpoint=args.checkpoint, deep=is_first_rank())
        if args.tta:
            wrap_tta(cfg, args.config)
        # --check-only starts no process group: the launcher's own checks come with the real run
        setup_launcher(cfg, 'none' if args.check_only else args.launcher)

    prepare_or_exit('test', prepare)
    if args.check_only:
        return
    build_runner(cfg).test()
    close_process_group()


if __name__ == '__main__':
    main()
