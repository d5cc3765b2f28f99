"""Command-line pieces shared by ``tools/train.py`` and ``tools/test.py``."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from .coco_format import CocoFormatError
from .input_checks import InputError
from .run_setup import LaunchError, compile_model


def tool_parser(description: str, tool: str, work_dir_holds: str,
                add_options: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    """A parser with the tools' common options around the tool's own (``add_options``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help='config file')
    add_options(parser)
    parser.add_argument('--work-dir', help=f'where {work_dir_holds} go '
                        '(default: the config\'s work_dir, else ./work_dirs/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config entries, e.g. model.backbone.init_cfg.checkpoint=PATH')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help=f'job launcher (tools/{tool}.sh sets it)')
    parser.add_argument('--no-input-check', action='store_true',
                        help='skip checking data folders, annotation files and checkpoint paths')
    parser.add_argument('--check-only', action='store_true',
                        help='check the config and its inputs, then exit without running (tools/'
                        f'{tool}.sh does this once before it starts several processes)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)
    return parser


def parse_tool_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, and export LOCAL_RANK for launchers that pass ``--local-rank``."""
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def load_config(path: str, cfg_options: dict | None = None) -> Config:
    """The config file with ``--cfg-options`` merged in."""
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def is_first_rank() -> bool:
    """Rank 0 of a torchrun job, or a plain process (annotation files are parsed there only)."""
    return os.environ.get('RANK', '0') == '0'


def prepare_or_exit(tool: str, prepare: Callable[[], None]) -> None:
    """Run the config edits; a bad option or input ends the tool with one line naming it."""
    try:
        prepare()
    except (LaunchError, InputError, CocoFormatError) as err:
        sys.exit(f'tools/{tool}.py: error: {err}')


def build_runner(cfg: Config) -> Runner:
    """mmengine's Runner, or the config's own ``runner_type``, with its model compiled when the config
    asks for it (``compile``: :func:`mmmila.utils.run_setup.compile_model`)."""
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    compile_model(runner)
    return runner
