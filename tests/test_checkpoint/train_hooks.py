"""Hooks for the tools/train.sh resume test, imported by ``resume_cls_config.py`` (test-local names)."""
from __future__ import annotations

import os

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from .helpers import RunNote

STOP_ENV = 'MMMILA_TEST_STOP_AFTER_ITER'


@HOOKS.register_module(name='MMMILATestKillAfter', force=True)
class KillAfter(Hook):
    """Ends the process abruptly after iteration ``$MMMILA_TEST_STOP_AFTER_ITER`` (a crash or a kill)."""

    priority = 'LOWEST'  # after the checkpoint hook of the same iteration

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        stop = os.environ.get(STOP_ENV)
        if stop and runner.iter + 1 == int(stop):
            os._exit(3)


@HOOKS.register_module(name='MMMILATestNote', force=True)
class Note(Hook):
    """Stores a plain object in each checkpoint, so resuming needs the work_dir's trust."""

    def before_save_checkpoint(self, runner, checkpoint):
        checkpoint['run_note'] = RunNote(runner.iter)
