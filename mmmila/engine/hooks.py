"""Hooks that keep a run's files whole (docs/checkpoints.md); ``import mmmila`` registers them in
mmengine's ``HOOKS``, and the project's configs name them in ``default_hooks``.

- :class:`AtomicCheckpointHook`: mmengine's ``CheckpointHook`` whose checkpoints and
  ``last_checkpoint`` are written atomically (:mod:`mmmila.engine.files`), and which removes
  outdated checkpoints only after the new one and ``last_checkpoint`` are in place;
- :class:`RankZeroLoggerHook`: mmengine's ``LoggerHook`` whose test metrics file is written by
  rank 0 only, atomically (mmengine 0.10.7 writes it on every rank into the same file);
- :class:`FiniteLossHook`: stops training at the first iteration whose loss is NaN or infinite,
  before a checkpoint of the poisoned weights is written.
"""
from __future__ import annotations

import glob
import math
import os
import os.path as osp

import torch
from mmengine.dist import all_reduce, get_world_size, is_main_process
from mmengine.fileio import dump
from mmengine.hooks import CheckpointHook, Hook, LoggerHook
from mmengine.runner import EpochBasedTrainLoop

from .files import ATOMIC_BACKEND, PARTIAL_SUFFIX, atomic_write


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; raised by :class:`FiniteLossHook`."""


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (a full disk, a lost mount); the earlier ones are intact."""


def last_checkpoint(work_dir: str) -> str | None:
    """The checkpoint that ``work_dir/last_checkpoint`` names, or None if there is none."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return None
    with open(pointer) as f:
        return f.read().strip() or None


class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` whose files are never seen half-written.

    Each checkpoint goes to a temporary name beside its own, is flushed to the disk and renamed
    (local ``out_dir``; another storage backend keeps mmengine's writes). Then ``last_checkpoint``
    is replaced the same way, and only then are the checkpoints beyond ``max_keep_ckpts`` (and a
    previous best checkpoint) removed: a process killed at any point leaves the previous
    checkpoints and a ``last_checkpoint`` that names a complete file. Temporary files left by a
    killed save (``*.saving``) are removed when training starts. Arguments: ``CheckpointHook``'s.
    """

    def before_train(self, runner) -> None:
        local = self.out_dir is None or '://' not in str(self.out_dir)
        if local and self.backend_args is None and self.file_client_args is None:
            self.backend_args = dict(backend=ATOMIC_BACKEND)
        super().before_train(runner)
        if local and is_main_process():  # checkpoints in out_dir, last_checkpoint in work_dir
            for folder in sorted({str(self.out_dir), runner.work_dir}):
                for partial in sorted(glob.glob(osp.join(glob.escape(folder), '*' + PARTIAL_SUFFIX))):
                    os.remove(partial)
                    runner.logger.warning(f'removed {partial}, the partial file of a save that did not '
                                          'finish')

    def _save_checkpoint_with_step(self, runner, step, meta):
        # mmengine's order is: remove the oldest checkpoint, save, write last_checkpoint. Here the
        # removal comes last, so that a crash never leaves fewer complete checkpoints than before.
        outdated = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        try:
            runner.save_checkpoint(
                self.out_dir, ckpt_filename, self.file_client_args, save_optimizer=self.save_optimizer,
                save_param_scheduler=self.save_param_scheduler, meta=meta, by_epoch=self.by_epoch,
                backend_args=self.backend_args, **self.args)
        except OSError as err:
            previous = last_checkpoint(runner.work_dir)
            kept = (f'the last complete checkpoint is {previous}' if previous
                    else 'no checkpoint was written before')
            raise CheckpointWriteError(f'could not write the checkpoint {self.last_ckpt} '
                                       f'({err.strerror or err}); nothing was written under its name, '
                                       f'{kept}') from err
        if not is_main_process():
            return
        atomic_write(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        if outdated is not None:
            self._remove(self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(outdated)))

    def _save_best_checkpoint(self, runner, metrics) -> None:
        # mmengine removes the previous best checkpoint before it writes the new one: remove it after.
        backend = self.file_backend
        self.file_backend = deferred = _RemovalsAfterward(backend)
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            self.file_backend = backend
        kept = {getattr(self, 'best_ckpt_path', None), *getattr(self, 'best_ckpt_path_dict', {}).values()}
        for path in deferred.removed:
            if path not in kept:
                self._remove(path)

    def _remove(self, path: str) -> None:
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):  # checkpoints saved by deepspeed are folders
            self.file_backend.rmtree(path)


class RankZeroLoggerHook(LoggerHook):
    """``LoggerHook`` whose test metrics file ``<log_dir>/<timestamp>.json`` is written by rank 0
    alone, atomically.

    mmengine 0.10.7 dumps the test metrics on every rank into the same file: with several
    processes the writers truncate and write one path at the same moment, and the file can end up
    holding two copies run together, which no JSON reader accepts. Every rank has the same metrics
    (the evaluator broadcasts them), so rank 0's copy is the file. Arguments: ``LoggerHook``'s.
    """

    def after_test_epoch(self, runner, metrics=None) -> None:
        tag, log_str = runner.log_processor.get_log_after_epoch(
            runner, len(runner.test_dataloader), 'test', with_non_scalar=True)
        runner.logger.info(log_str)
        if is_main_process():
            text = dump(self._process_tags(tag), file_format='json')
            atomic_write(osp.join(runner.log_dir, self.json_log_path), text)


class FiniteLossHook(Hook):
    """Stop training at the first iteration whose loss is NaN or infinite.

    It checks every value of the training step's outputs whose name contains ``loss`` (the total
    ``loss`` and its parts), after the optimizer step and before the checkpoint and logger hooks
    of that iteration: the run stops with :class:`NonFiniteLossError`, which names the iteration
    and the values, and no checkpoint of the poisoned weights is written; the last checkpoint
    stays the newest. With several processes the ranks agree (one all-reduce of a flag per
    iteration), so all of them stop at the same iteration.

    Args:
        enabled (bool): check the loss; ``--cfg-options default_hooks.check_loss.enabled=False`` turns
            the check off in the project's configs (mmengine accepts ``None`` only for its own default
            hooks). Defaults to True.
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self.enabled:
            return
        bad = {name: value for name, value in (outputs or {}).items()
               if 'loss' in name and not _is_finite(value)}
        if get_world_size() > 1:
            flag = torch.tensor([float(bool(bad))])
            all_reduce(flag, op='sum')
            any_rank = flag.item() > 0
        else:
            any_rank = bool(bad)
        if not any_rank:
            return
        where = f'iteration {runner.iter + 1}'
        if isinstance(runner.train_loop, EpochBasedTrainLoop):
            where += f' (epoch {runner.epoch + 1}, iteration {batch_idx + 1} of the epoch)'
        values = ', '.join(f'{k}={_shown(v)}' for k, v in bad.items()) or 'on another process'
        last = last_checkpoint(runner.work_dir)
        kept = f'the last good checkpoint is {last}' if last else 'no checkpoint had been written'
        raise NonFiniteLossError(f'the loss is not finite at {where}: {values}; training stopped '
                                 f'before saving these weights ({kept})')


def _shown(value) -> str:
    if isinstance(value, torch.Tensor):
        return str(value.item()) if value.numel() == 1 else 'non-finite values'
    return str(value)


def _is_finite(value) -> bool:
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value.detach()).all())
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    return True


class _RemovalsAfterward:
    """A checkpoint hook's file backend that records removals instead of making them."""

    def __init__(self, backend):
        self._backend = backend
        self.removed: list[str] = []

    def remove(self, path: str) -> None:
        self.removed.append(path)

    def rmtree(self, path: str) -> None:
        self.removed.append(path)

    def __getattr__(self, name: str):
        return getattr(self._backend, name)
