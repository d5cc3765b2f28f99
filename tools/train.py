"""Train an mmmila config with mmengine's Runner (detection, segmentation or classification).

The task comes from the config's ``default_scope`` ('mmdet', 'mmseg' or 'mmpretrain'). Usually
started by ``tools/train.sh CONFIG GPUS [args]``; on its own it trains in one process::

    python tools/train.py configs/mask_rcnn_mila_t_3x.py --work-dir work_dirs/t3x
"""
from __future__ import annotations

import warnings

# setuptools' "pkg_resources is deprecated" notice, raised when mmengine and mmcv are imported (once per
# process): nothing the user can act on. Filtered here, in the tool, before those imports.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)

import argparse
import os.path as osp
import sys

from mmmila.engine.hooks import CheckpointWriteError, NonFiniteLossError
from mmmila.utils.cli import (build_runner, is_first_rank, load_config, parse_tool_args, prepare_or_exit,
                              tool_parser)
from mmmila.utils.input_checks import check_run_inputs
from mmmila.utils.resume import choose_resume_checkpoint
from mmmila.utils.run_setup import (close_process_group, compile_options, detect_task, enable_amp,
                                    exit_together, set_dataloader_defaults, set_resume, set_work_dir,
                                    setup_launcher, use_file_safe_hooks)


def _train_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--resume', nargs='?', const='auto', default=None, metavar='CHECKPOINT',
                        help='resume from CHECKPOINT, or without a value from the latest checkpoint '
                        'in the work dir')
    parser.add_argument('--amp', action='store_true', help='mixed-precision training (needs a GPU)')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = tool_parser('Train a model from an mmmila config.', 'train', 'logs and checkpoints',
                         _train_options)
    return parse_tool_args(parser, argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)

    def prepare():
        task = detect_task(cfg)
        set_work_dir(cfg, args.work_dir, args.config)
        set_dataloader_defaults(cfg, task)
        if args.amp:
            enable_amp(cfg)
        set_resume(cfg, args.resume)
        use_file_safe_hooks(cfg)
        compile_options(cfg)   # a bad value stops here, with the value named
        if not args.no_input_check:
            check_run_inputs(cfg, 'train', deep=is_first_rank())
            if args.resume:
                # a checkpoint that does not read: the newest that does, or one line (mmmila/utils/resume.py)
                _, note = choose_resume_checkpoint(osp.abspath(cfg.work_dir), args.resume)
                if note:
                    print(f'tools/train.py: warning: {note}', file=sys.stderr)
        # --check-only starts no process group: the launcher's own checks come with the real run
        setup_launcher(cfg, 'none' if args.check_only else args.launcher)

    prepare_or_exit('train', prepare)
    if args.check_only:
        return
    try:
        build_runner(cfg).train()
    except NonFiniteLossError as err:  # every process stops at the same iteration
        exit_together(f'tools/train.py: error: {err}')
    except CheckpointWriteError as err:  # raised by the process that writes checkpoints, rank 0
        sys.exit(f'tools/train.py: error: {err}')
    close_process_group()


if __name__ == '__main__':
    main()
