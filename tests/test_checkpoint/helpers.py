"""Test-local pieces for the checkpoint policy tests: a code-running payload, a toy Runner job,
and a checkpoint in the authors' training format."""
from __future__ import annotations

import builtins
import copy
import hashlib
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import BaseModel

from ..conftest import seed_for


class Payload:
    """Unpickling this object runs code: it writes ``marker``. Safe loading must never do that."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.exec, (f'open({self.marker!r}, "w").write("unpickled")',)


def save_payload_checkpoint(path: Path, marker: Path, weights: dict | None = None) -> Path:
    """A .pth that looks like a checkpoint of ``weights`` but runs code when fully unpickled."""
    weights = weights if weights is not None else {'fc.weight': torch.zeros(1, 4), 'fc.bias': torch.zeros(1)}
    torch.save({'state_dict': weights, 'meta': {'note': Payload(marker)}}, path)
    return path


class RunNote:
    """A plain object a hook stores in the checkpoint: data, but only the full unpickler rebuilds it."""

    def __init__(self, iteration: int):
        self.iteration = iteration


class ToyModel(BaseModel):
    """y = fc(x), trained with a squared error."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 1)

    def forward(self, inputs, labels=None, mode='tensor'):
        inputs = torch.stack(inputs) if isinstance(inputs, list) else inputs
        out = self.fc(inputs).squeeze(-1)
        if mode == 'loss':
            labels = torch.stack(labels) if isinstance(labels, list) else labels
            return {'loss': ((out - labels) ** 2).mean()}
        return out


class ToyData(torch.utils.data.Dataset):
    """16 fixed samples (seeded per index)."""

    def __len__(self):
        return 16

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(seed_for(i))
        x = torch.randn(4, generator=g)
        return dict(inputs=x, labels=x.sum() * 0.5 + 1)


class Interrupted(RuntimeError):
    """Raised by :class:`StopAt` to simulate a crash."""


class StopAt(Hook):
    """Crash after iteration ``iteration`` (after the checkpoint hook of that iteration ran)."""

    priority = 'LOWEST'

    def __init__(self, iteration: int):
        self.iteration = iteration

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.iteration:
            raise Interrupted(f'stopped after iteration {self.iteration}')


class NoteInCheckpoint(Hook):
    """Stores a :class:`RunNote` in every checkpoint (as users' hooks do with their own state)."""

    def before_save_checkpoint(self, runner, checkpoint):
        checkpoint['run_note'] = RunNote(runner.iter)


class Probe(Hook):
    """Records the iteration and a copy of the optimizer state when training starts."""

    def before_train(self, runner):
        self.iter = runner.iter
        self.optimizer_state = copy.deepcopy(runner.optim_wrapper.optimizer.state_dict())


def snapshot(work_dir: Path) -> dict:
    """Every file under ``work_dir`` with the digest of its content."""
    return {str(p.relative_to(work_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(work_dir.rglob('*')) if p.is_file()}


def toy_runner(work_dir: Path, max_iters: int = 6, hooks=(), **kwargs):
    """An mmengine Runner on :class:`ToyModel`: AdamW, a LinearLR warm-up, a checkpoint every 2 iters."""
    from mmengine.runner import Runner

    torch.manual_seed(seed_for(0))
    return Runner(
        model=ToyModel(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=ToyData(), sampler=dict(type='DefaultSampler', shuffle=False),
                              batch_size=4, num_workers=0, collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.05, weight_decay=0.01)),
        param_scheduler=dict(type='LinearLR', start_factor=0.2, by_epoch=False, begin=0, end=4),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=list(hooks), randomness=dict(seed=seed_for(0)), **kwargs)


def released_training_checkpoint(model_weights: dict) -> dict:
    """The authors' training-file layout: weights, EMA, optimizer, scheduler, epoch, yacs config."""
    from yacs.config import CfgNode

    config = CfgNode()
    config.MODEL = CfgNode()
    config.MODEL.TYPE = 'mlla'
    config.MODEL.MLLA = CfgNode()
    config.MODEL.MLLA.DEPTHS = [1, 1, 2, 1]
    config.TRAIN = CfgNode()
    config.TRAIN.EPOCHS = 300
    config.TRAIN.BASE_LR = 1e-3
    config.freeze()
    params = [nn.Parameter(v.clone()) for v in model_weights.values() if v.is_floating_point()][:3]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    sum(p.sum() for p in params).backward()
    optimizer.step()
    return OrderedDict(
        model=model_weights,
        state_dict_ema={k: v.clone() for k, v in model_weights.items()},
        optimizer=optimizer.state_dict(),
        lr_scheduler={'t_initial': 300, 'warmup_t': 20, 'last_epoch': 299},
        max_accuracy=83.5, scaler={'scale': 65536.0, '_growth_tracker': 7},
        epoch=299, config=config)
