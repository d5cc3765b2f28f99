"""Config edits shared by ``tools/train.py`` and ``tools/test.py`` for mmdet, mmseg and mmpretrain.

Each function applies one command-line option to a loaded config the way the libraries' own tools
do, and raises :class:`LaunchError` with the reason when the option cannot apply.
"""
from __future__ import annotations

import inspect
import os
import os.path as osp
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
from mmengine.config import ConfigDict

TASKS = ('mmdet', 'mmseg', 'mmpretrain')


class LaunchError(ValueError):
    """A command-line option that the config or the machine cannot honour."""


def detect_task(cfg) -> str:
    """The library a config runs in, from its ``default_scope``."""
    scope = cfg.get('default_scope')
    if scope not in TASKS:
        raise LaunchError(f"the config's default_scope is {scope!r}; mmmila's tools run configs of "
                          f"{' / '.join(repr(t) for t in TASKS)} (detection / segmentation / classification)")
    return scope


def set_work_dir(cfg, work_dir: str | None, config_path: str) -> None:
    """``--work-dir`` > the config's ``work_dir`` > ``./work_dirs/<config name>``."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def setup_launcher(cfg, launcher: str) -> None:
    """Set ``cfg.launcher``; without CUDA, make distributed runs use gloo on the CPU.

    mmengine's pytorch launcher selects a CUDA device and its DDP wrapper passes ``device_ids``,
    both of which fail on a CPU-only machine, so the process group is created here (gloo, from
    torchrun's environment) and the wrapper gets ``device_ids=None``.
    """
    cfg.launcher = launcher
    if torch.cuda.is_available():
        return
    dist_cfg = cfg.setdefault('env_cfg', ConfigDict()).setdefault('dist_cfg', ConfigDict())
    dist_cfg['backend'] = 'gloo'
    if launcher == 'none':
        return
    if launcher != 'pytorch':
        raise LaunchError(f"--launcher {launcher} needs CUDA GPUs; on this CPU-only machine use "
                          "--launcher pytorch (tools/train.sh with GPUS > 1 does)")
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo', timeout=timedelta(seconds=dist_cfg.get('timeout', 1800)))
    wrapper = cfg.get('model_wrapper_cfg') or ConfigDict(
        type='MMDistributedDataParallel', broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    if str(wrapper.get('type', 'MMDistributedDataParallel')).endswith('MMDistributedDataParallel'):
        wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper


def close_process_group() -> None:
    """Destroy the default process group after a run that finished on every rank.

    The Runner leaves it open. At interpreter exit gloo's worker threads may then still hold work
    items, and the process aborts (SIGABRT, "terminate called without an active exception"): a
    run whose checkpoints and metrics are all written fails with exit code -6. Seen here once in
    a 2-process ``tools/test.sh``. Called only after success: after an error on one rank the
    others may be inside a collective, and destroying the group could hang.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit_together(message: str) -> None:
    """End every process of a run that all of them stopped at the same point (the loss check):
    rank 0 prints ``message`` first, then the processes meet, close the process group and exit 1.

    Without the meeting torchrun would end rank 0 (SIGTERM) as soon as another rank exits, at times
    before the message is printed.
    """
    first = not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    if first:
        print(message, file=sys.stderr, flush=True)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    close_process_group()
    sys.exit(1)


def enable_amp(cfg) -> None:
    """``--amp``: mixed precision through mmengine's ``AmpOptimWrapper`` (dynamic loss scale)."""
    from mmengine.device import get_device
    if get_device() == 'cpu':
        raise LaunchError('--amp needs a GPU (mmengine\'s AmpOptimWrapper runs on CUDA/NPU/MLU/MUSA '
                          'devices); this machine has none: run without --amp')
    wrapper = cfg.optim_wrapper
    kind = str(wrapper.get('type', 'OptimWrapper')).split('.')[-1]
    if kind == 'OptimWrapper':
        wrapper.type = 'AmpOptimWrapper'
        wrapper.setdefault('loss_scale', 'dynamic')
    elif kind != 'AmpOptimWrapper':
        raise LaunchError(f'--amp replaces OptimWrapper by AmpOptimWrapper, but the config\'s '
                          f'optim_wrapper.type is {wrapper.type!r}')


def compile_options(cfg) -> dict | None:
    """The config's ``compile`` setting as ``torch.compile`` keyword arguments, or None when off.

    mmengine's convention: ``compile=True`` (defaults) or ``compile=dict(backend=..., mode=...,
    dynamic=...)``; anything else is refused with the value named.
    """
    value = cfg.get('compile', None)
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if isinstance(value, dict):
        return dict(value)
    raise LaunchError(f'compile must be True, False or a dict of torch.compile options, got {value!r}')


def compile_model(runner) -> bool:
    """``compile=True`` / ``compile=dict(...)``: compile the Runner's model with ``torch.compile``.

    The model's calls (``model(inputs, data_samples, mode)``: backbone, neck, heads and losses) are
    compiled in place with ``nn.Module.compile`` -- for training, validation and testing alike --
    while data preprocessing, loss parsing and the optimizer step stay eager. mmengine's Runner
    would instead compile ``train_step`` (training only), which puts the optimizer step inside the
    compiled region: with torch 2.13 dynamo then fails on mmengine's parameter groups, which are
    ``ConfigDict`` objects ("'UserDefinedDictVariable' object has no attribute 'items'"), so the
    Runner's own compilation is switched off for this Runner. ``nn.Module.compile`` keeps the
    state dict's keys (checkpoints load either way) and survives ``copy.deepcopy`` (an EMA copy
    runs its own weights). Returns whether it compiled.
    """
    options = compile_options(runner.cfg)
    if options is None:
        return False
    from mmengine.model import is_model_wrapper
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    model.compile(**options)
    runner._maybe_compile = lambda target: None   # see above: not also mmengine's train_step compilation
    runner.logger.info(f'model compiled with torch.compile({options or ""}) (nn.Module.compile); the first '
                       'iterations include the compilation')
    return True


def set_resume(cfg, resume: str | None) -> None:
    """``--resume``: 'auto' takes the work_dir's latest checkpoint, a path resumes from that file."""
    if resume is None:
        return
    cfg.resume = True
    cfg.load_from = None if resume == 'auto' else resume


# mmengine's hooks that write files, and mmmila's subclasses that write them whole (mmmila.engine.hooks).
FILE_SAFE_HOOKS = {'LoggerHook': 'RankZeroLoggerHook', 'CheckpointHook': 'AtomicCheckpointHook'}


def use_file_safe_hooks(cfg) -> list[str]:
    """Run a config that names mmengine's own ``LoggerHook`` / ``CheckpointHook`` in
    ``default_hooks`` with mmmila's subclasses, which write their files from rank 0 only and
    atomically (the project's configs name those already; docs/checkpoints.md).

    Returns:
        list[str]: the ``default_hooks`` keys whose type was changed.
    """
    changed = []
    for key, hook in (cfg.get('default_hooks') or {}).items():
        kind = hook.get('type') if isinstance(hook, dict) else None
        if isinstance(kind, str) and kind.removeprefix('mmengine.') in FILE_SAFE_HOOKS:
            hook['type'] = FILE_SAFE_HOOKS[kind.removeprefix('mmengine.')]
            changed.append(key)
    return changed


def set_dataloader_defaults(cfg, task: str) -> None:
    """mmpretrain's own tools batch samples with ``default_collate``; do the same."""
    if task != 'mmpretrain':
        return
    for field in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(field):
            cfg[field].setdefault('collate_fn', dict(type='default_collate'))


def _metric_class(task: str, type_):
    if not isinstance(type_, str):
        return type_
    from mmengine.registry import METRICS
    return METRICS.get(type_ if '.' in type_ else f'{task}.{type_}')


def set_format_only(cfg, task: str, out_dir: str, prefix: str) -> list[str]:
    """``--format-only --out-dir DIR``: write submission files instead of scoring.

    mmdet metrics (``CocoMetric``) write ``DIR/<prefix>.bbox.json`` and ``.segm.json``; mmseg
    metrics (``IoUMetric``) write one PNG per image into ``DIR``.

    Returns:
        list[str]: the test metric types that were switched.
    """
    if task == 'mmpretrain':
        raise LaunchError('--format-only is not supported for classification: mmpretrain\'s metrics '
                          'write no result files (use --cfg-options to add a DumpResults metric instead)')
    if not out_dir:
        raise LaunchError('--format-only needs --out-dir DIR, the directory for the result files')
    evaluator = cfg.test_evaluator
    metrics = evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]
    switched = []
    for metric in metrics:
        params = inspect.signature(_metric_class(task, metric.get('type')).__init__).parameters
        if 'format_only' not in params:
            raise LaunchError(f"--format-only: the test metric {metric.get('type')!r} cannot write "
                              'result files (it has no format_only option)')
        metric['format_only'] = True
        if 'outfile_prefix' in params:
            metric['outfile_prefix'] = osp.join(osp.abspath(out_dir), prefix)
        elif 'output_dir' in params:
            metric['output_dir'] = osp.abspath(out_dir)
        switched.append(str(metric.get('type')))
    sampler = (cfg.get('test_dataloader') or {}).get('sampler') or {}
    if task == 'mmseg' and str(sampler.get('type', '')).endswith('DefaultSampler'):
        # IoUMetric writes each image's PNG in the process that predicted it. The sampler's padding
        # (round_up) gives a few images to two processes -- two writers of one file; without it each
        # image goes to one process (the evaluator gathers uneven shares in order).
        sampler['round_up'] = False
    os.makedirs(out_dir, exist_ok=True)
    return switched


def wrap_tta(cfg, config_path: str) -> None:
    """``--tta``: wrap the model in ``cfg.tta_model`` and test with ``cfg.tta_pipeline``."""
    missing = [key for key in ('tta_model', 'tta_pipeline') if not cfg.get(key)]
    if missing:
        raise LaunchError(f'--tta needs {" and ".join(missing)} in {config_path}: test-time augmentation '
                          'is defined by the config (e.g. mmseg\'s SegTTAModel with a multi-scale, '
                          'flipped tta_pipeline); this config has none')
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def set_show_dir(cfg, task: str, show_dir: str) -> None:
    """``--show-dir DIR``: draw the test predictions and save the images under ``DIR``."""
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise LaunchError('--show-dir needs a visualization hook in default_hooks '
                          "(e.g. dict(type='DetVisualizationHook'))")
    show_dir = osp.abspath(show_dir)
    if task == 'mmdet':
        hook.update(draw=True, test_out_dir=show_dir)
    elif task == 'mmseg':
        hook.update(draw=True)
        cfg.visualizer['save_dir'] = show_dir
    else:
        hook.update(enable=True, out_dir=show_dir)
