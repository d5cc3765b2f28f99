"""A hook for the DDP launcher test: each rank records what it trained on and its final weights.

Imported by the test's generated config through ``custom_imports``; writes
``<work_dir>/probe_rank<r>.json`` after training.
"""
from __future__ import annotations

import json
import os.path as osp

import torch
from mmengine.dist import get_dist_info
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


def weights_checksum(state_dict: dict) -> float:
    """Sum of every floating-point parameter and buffer, in float64 (equal weights, equal sums)."""
    return float(sum(v.double().sum() for v in state_dict.values() if torch.is_floating_point(v)))


@HOOKS.register_module()
class DDPProbeHook(Hook):
    """Record the image ids each rank trained on and a checksum of its weights."""

    def before_train(self, runner) -> None:
        self.img_ids = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.img_ids += [int(s.metainfo['img_id']) for s in data_batch['data_samples']]

    def after_train(self, runner) -> None:
        rank, world_size = get_dist_info()
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        record = dict(rank=rank, world_size=world_size, iter=runner.iter, img_ids=self.img_ids,
                      checksum=weights_checksum(model.state_dict()))
        with open(osp.join(runner.work_dir, f'probe_rank{rank}.json'), 'w') as f:
            json.dump(record, f)
