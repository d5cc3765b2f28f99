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


BN_STATS = ('.running_mean', '.running_var', '.num_batches_tracked')


def weights_checksum(tensors) -> float:
    """Sum of every floating-point tensor, in float64 (equal weights, equal sums)."""
    return float(sum(v.double().sum() for v in tensors if torch.is_floating_point(v)))


def split_checksums(state_dict: dict) -> tuple[float, float]:
    """(checksum of everything but BatchNorm statistics, checksum of the BatchNorm statistics)."""
    stats = {k for k in state_dict if k.endswith(BN_STATS)}
    return (weights_checksum(v for k, v in state_dict.items() if k not in stats),
            weights_checksum(state_dict[k] for k in stats))


@HOOKS.register_module()
class DDPProbeHook(Hook):
    """Record the image ids each rank trained on and checksums of its parameters and buffers."""

    def before_train(self, runner) -> None:
        self.img_ids = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.img_ids += [int(s.metainfo['img_id']) for s in data_batch['data_samples']]

    def after_train(self, runner) -> None:
        rank, world_size = get_dist_info()
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        # Parameters are what DDP keeps equal; the stem's BatchNorm statistics are per rank (the
        # authors' recipe: plain BN in train mode, broadcast_buffers=False), so they are kept apart.
        params, bn_stats = split_checksums(model.state_dict())
        record = dict(rank=rank, world_size=world_size, iter=runner.iter, img_ids=self.img_ids,
                      params=params, bn_stats=bn_stats)
        with open(osp.join(runner.work_dir, f'probe_rank{rank}.json'), 'w') as f:
            json.dump(record, f)
