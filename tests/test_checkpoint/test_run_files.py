"""What a run guarantees about its files (docs/checkpoints.md): atomic writes, checkpoints that
survive a failed or killed save, the resume choice around an unreadable checkpoint, the NaN stop,
and the test metrics file written by rank 0 alone."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mmengine.hooks import Hook

from mmmila.checkpoint import trusted_paths
from mmmila.checkpoint.reading import read_checkpoint
from mmmila.engine import hooks
from mmmila.engine.files import PARTIAL_SUFFIX, atomic_write
from mmmila.engine.hooks import CheckpointWriteError, NonFiniteLossError, RankZeroLoggerHook
from mmmila.utils.resume import choose_resume_checkpoint
from mmmila.utils.run_setup import LaunchError, use_file_safe_hooks

from ..conftest import REPO, seed_for
from .helpers import snapshot, toy_runner

ATOMIC = dict(type='AtomicCheckpointHook', max_keep_ckpts=1)


def half_writing_fdopen(monkeypatch, seen: list, folder: Path):
    """Make the next file opened by ``os.fdopen`` take half of a write, then fail as a full disk does;
    ``seen`` records the sizes of ``folder``'s files at that moment."""
    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(data[:len(data) // 2])
            self.f.flush()
            seen.append({p.name: p.stat().st_size for p in folder.iterdir()})
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def __getattr__(self, name):
            return getattr(self.f, name)

    def fdopen(fd, *args, **kwargs):
        monkeypatch.setattr(os, 'fdopen', real_fdopen)  # the next file only
        return HalfWriter(real_fdopen(fd, *args, **kwargs))

    monkeypatch.setattr(os, 'fdopen', fdopen)


def test_atomic_write_keeps_the_old_file_when_a_write_fails(tmp_path, monkeypatch):
    target = tmp_path / 'epoch_1.pth'
    atomic_write(target, b'old checkpoint')
    seen = []
    half_writing_fdopen(monkeypatch, seen, tmp_path)
    with pytest.raises(OSError, match=os.strerror(errno.ENOSPC)):
        atomic_write(target, b'new checkpoint ' * 1000)
    # during the write, the new bytes were under a temporary name only; the target was the old file
    partial = f'epoch_1.pth.{os.getpid()}{PARTIAL_SUFFIX}'
    assert seen[0] == {'epoch_1.pth': len(b'old checkpoint'), partial: len(b'new checkpoint ' * 1000) // 2}
    assert target.read_bytes() == b'old checkpoint'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['epoch_1.pth']  # the partial file removed
    atomic_write(target, 'new text')
    assert target.read_text() == 'new text'
    plain = tmp_path / 'plain'
    plain.write_text('x')
    assert target.stat().st_mode == plain.stat().st_mode  # the same permissions as open() gives


class FullDiskAt(Hook):
    """The save of iteration ``iteration`` fails half-way, as on a full disk."""

    def __init__(self, iteration: int, monkeypatch):
        self.iteration, self.monkeypatch, self.seen = iteration, monkeypatch, []

    def before_save_checkpoint(self, runner, checkpoint):
        if runner.iter + 1 == self.iteration:
            half_writing_fdopen(self.monkeypatch, self.seen, Path(runner.work_dir))


def test_failed_save_keeps_previous_checkpoint_and_last_checkpoint(tmp_path, monkeypatch):
    """max_keep_ckpts=1: mmengine's hook removes iter_2.pth before it writes iter_4.pth; ours after."""
    work = tmp_path / 'work'
    with pytest.raises(CheckpointWriteError) as err:
        toy_runner(work, checkpoint=ATOMIC, hooks=[FullDiskAt(4, monkeypatch)]).train()
    message = str(err.value)
    assert 'iter_4.pth' in message and os.strerror(errno.ENOSPC) in message
    assert message.endswith(f'the last complete checkpoint is {work / "iter_2.pth"}')
    assert sorted(p.name for p in work.glob('*.pth*')) == ['iter_2.pth']
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_2.pth')
    with trusted_paths(str(work)):
        assert read_checkpoint(str(work / 'iter_2.pth'))['meta']['iter'] == 2


KILLED_SAVE = '''
import os, sys, time
import torch
import mmmila  # noqa: F401  (registers the hooks)
from mmengine.hooks import Hook
from tests.test_checkpoint.helpers import toy_runner

work, marker = sys.argv[1:3]


class BlockSecondSave(Hook):
    def before_save_checkpoint(self, runner, checkpoint):
        if runner.iter + 1 == 4:
            checkpoint['ballast'] = torch.zeros(2 ** 22)  # a 16 MB file

            def blocked_fsync(fd):  # the bytes are written; the parent kills the process here
                open(marker, 'w').close()
                time.sleep(600)
            os.fsync = blocked_fsync


toy_runner(work, checkpoint=dict(type='AtomicCheckpointHook', max_keep_ckpts=1),
           hooks=[BlockSecondSave()]).train()
'''


def test_process_killed_during_a_save_leaves_the_previous_checkpoint(tmp_path):
    work, marker = tmp_path / 'work', tmp_path / 'saving'
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get('PYTHONPATH')) if p),
               OMP_NUM_THREADS='1')
    proc = subprocess.Popen([sys.executable, '-c', KILLED_SAVE, str(work), str(marker)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.stderr.read().decode()[-3000:] if proc.poll() is not None else 'timed out'
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stderr.close()

    names = sorted(p.name for p in work.iterdir() if p.is_file() and p.suffix != '.py')
    assert names == ['iter_2.pth', f'iter_4.pth.{proc.pid}{PARTIAL_SUFFIX}', 'last_checkpoint']
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_2.pth')
    with trusted_paths(str(work)):
        assert read_checkpoint(str(work / 'iter_2.pth'))['meta']['iter'] == 2

    # resuming continues from iter_2.pth, removes the partial file, and ends where an uninterrupted run ends
    resumed = toy_runner(work, checkpoint=ATOMIC, resume=True)
    resumed.train()
    reference = toy_runner(tmp_path / 'reference', checkpoint=ATOMIC)
    reference.train()
    files = sorted(p.name for p in work.iterdir() if p.is_file() and p.suffix != '.py')
    assert files == ['iter_6.pth', 'last_checkpoint']
    for key, value in reference.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0)


def write_checkpoints(work: Path, steps=(1, 2, 3)) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed_for(1))
    for step in steps:
        torch.save({'state_dict': {'w': torch.randn(64, generator=g)}, 'meta': {'epoch': step}},
                   work / f'epoch_{step}.pth')
        (work / 'last_checkpoint').write_text(str(work / f'epoch_{step}.pth'))
    return snapshot(work)


def truncate(path: Path) -> bytes:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return data[:len(data) // 2]


def test_plain_resume_skips_an_unreadable_newest_checkpoint_and_keeps_it(tmp_path):
    work = tmp_path / 'work'
    before = write_checkpoints(work)
    torn = truncate(work / 'epoch_3.pth')
    chosen, note = choose_resume_checkpoint(str(work), 'auto')
    assert chosen == str(work / 'epoch_2.pth')
    assert note.startswith(f'the latest checkpoint {work / "epoch_3.pth"} cannot be read (truncated or corrupt')
    assert f'kept as {work / "epoch_3.pth.unreadable"}' in note and f'resuming from {work / "epoch_2.pth"}' in note
    assert '\n' not in note
    assert (work / 'epoch_3.pth.unreadable').read_bytes() == torn and not (work / 'epoch_3.pth').exists()
    assert (work / 'last_checkpoint').read_text() == str(work / 'epoch_2.pth')
    after = snapshot(work)
    intact = ('epoch_1.pth', 'epoch_2.pth')
    assert {k: after[k] for k in intact} == {k: before[k] for k in intact}
    # a second look finds everything consistent: nothing more is moved
    assert choose_resume_checkpoint(str(work), 'auto') == (str(work / 'epoch_2.pth'), None)
    assert snapshot(work) == after


def test_plain_resume_with_intact_or_no_checkpoints(tmp_path):
    assert choose_resume_checkpoint(str(tmp_path / 'fresh'), 'auto') == (None, None)  # starts from the beginning
    work = tmp_path / 'work'
    before = write_checkpoints(work)
    assert choose_resume_checkpoint(str(work), 'auto') == (str(work / 'epoch_3.pth'), None)
    assert snapshot(work) == before
    for step in (1, 2, 3):
        truncate(work / f'epoch_{step}.pth')
    with pytest.raises(LaunchError, match='no other checkpoint in .* reads: nothing to resume from'):
        choose_resume_checkpoint(str(work), 'auto')


def test_explicit_resume_of_an_unreadable_checkpoint_stops_with_one_line(tmp_path):
    work = tmp_path / 'work'
    write_checkpoints(work)
    truncate(work / 'epoch_3.pth')
    with pytest.raises(LaunchError) as err:
        choose_resume_checkpoint(str(work), str(work / 'epoch_3.pth'))
    message = str(err.value)
    assert message.startswith(f'--resume {work / "epoch_3.pth"} cannot be read (truncated or corrupt, ')
    assert message.endswith(f'; kept as {work / "epoch_3.pth.unreadable"}; the newest intact checkpoint in '
                            f'{work} is {work / "epoch_2.pth"}')
    assert '\n' not in message


class PoisonAt(Hook):
    """Fill the weights with NaN before iteration ``iteration``."""

    def __init__(self, iteration: int):
        self.iteration = iteration

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.iteration:
            with torch.no_grad():
                runner.model.fc.weight.fill_(float('nan'))


def test_nan_loss_stops_before_a_poisoned_checkpoint(tmp_path):
    work = tmp_path / 'work'
    runner = toy_runner(work, hooks=[PoisonAt(4)], checkpoint=dict(type='AtomicCheckpointHook'),
                        default_hooks=dict(check_loss=dict(type='FiniteLossHook')))
    with pytest.raises(NonFiniteLossError) as err:
        runner.train()
    assert str(err.value) == ('the loss is not finite at iteration 4: loss=nan; training stopped before '
                              f'saving these weights (the last good checkpoint is {work / "iter_2.pth"})')
    assert sorted(p.name for p in work.glob('*.pth')) == ['iter_2.pth']
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_2.pth')

    # the config option that turns the check off: the same run writes the poisoned weights
    unchecked = tmp_path / 'unchecked'
    toy_runner(unchecked, hooks=[PoisonAt(4)],
               default_hooks=dict(check_loss=dict(type='FiniteLossHook', enabled=False))).train()
    saved = torch.load(unchecked / 'iter_4.pth', weights_only=False)  # this test's own file
    assert torch.isnan(saved['state_dict']['fc.weight']).all()


def test_test_metrics_file_is_written_by_rank_zero_only(tmp_path, monkeypatch):
    """Every rank holds the metrics; only rank 0 writes the file, and it parses."""
    from mmengine.logging import MMLogger
    metrics = {'coco/bbox_mAP': 0.58, 'coco/segm_mAP': 0.553}
    runner = SimpleNamespace(
        log_dir=str(tmp_path), test_dataloader=[0, 1, 2], logger=MMLogger.get_instance('files23_test'),
        log_processor=SimpleNamespace(get_log_after_epoch=lambda *args, **kwargs: (dict(metrics), 'metrics')))
    hook = RankZeroLoggerHook()
    hook.json_log_path = 'run.json'
    monkeypatch.setattr(hooks, 'is_main_process', lambda: False)
    hook.after_test_epoch(runner)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(hooks, 'is_main_process', lambda: True)
    hook.after_test_epoch(runner)
    assert json.loads((tmp_path / 'run.json').read_text()) == metrics


def test_tools_run_configs_with_the_file_safe_hooks():
    from mmengine.config import Config
    cfg = Config(dict(default_hooks=dict(logger=dict(type='LoggerHook', interval=5),
                                         checkpoint=dict(type='mmengine.CheckpointHook', interval=2),
                                         timer=dict(type='IterTimerHook'), visualization=None)))
    assert use_file_safe_hooks(cfg) == ['logger', 'checkpoint']
    assert cfg.default_hooks.logger == dict(type='RankZeroLoggerHook', interval=5)
    assert cfg.default_hooks.checkpoint == dict(type='AtomicCheckpointHook', interval=2)
    assert cfg.default_hooks.timer == dict(type='IterTimerHook')


def test_segmentation_format_only_gives_each_image_to_one_process(tmp_path):
    """IoUMetric writes each image's PNG where it was predicted: no padded duplicates, one writer a file."""
    from mmengine.config import Config
    from mmmila.utils.run_setup import set_format_only
    cfg = Config.fromfile(str(REPO / 'configs' / 'upernet_mila_t_512x512_160k_ade20k.py'))
    assert cfg.test_dataloader.sampler.get('round_up', True)  # mmengine's default pads
    set_format_only(cfg, 'mmseg', str(tmp_path / 'out'), 'upernet')
    assert cfg.test_dataloader.sampler == dict(type='DefaultSampler', shuffle=False, round_up=False)


@pytest.mark.parametrize('config', sorted(str(p.relative_to(REPO)) for p in (REPO / 'configs').rglob('*.py')
                                          if '_base_' not in p.parts))
def test_shipped_configs_name_the_hooks(config):
    from mmengine.config import Config
    from mmengine.registry import HOOKS
    cfg = Config.fromfile(str(REPO / config))
    hooks_cfg = cfg.default_hooks
    assert (hooks_cfg.logger.type, hooks_cfg.checkpoint.type) == ('RankZeroLoggerHook', 'AtomicCheckpointHook')
    assert hooks_cfg.check_loss == dict(type='FiniteLossHook', enabled=True)
    assert HOOKS.get('FiniteLossHook') is hooks.FiniteLossHook  # registered by import mmmila
    cfg.merge_from_dict({'default_hooks.check_loss.enabled': False})  # the switch of --cfg-options
    assert HOOKS.build(cfg.default_hooks.check_loss).enabled is False


def test_previous_best_checkpoint_is_removed_only_after_the_new_one_is_written(tmp_path, monkeypatch):
    work = tmp_path / 'work'
    runner = toy_runner(work, max_iters=2, checkpoint=dict(type='AtomicCheckpointHook', save_best='acc',
                                                           rule='greater'))
    runner.train()
    hook = next(h for h in runner.hooks if type(h).__name__ == 'AtomicCheckpointHook')
    hook._save_best_checkpoint(runner, {'acc': 0.5})
    assert sorted(p.name for p in work.glob('best_*')) == ['best_acc_iter_2.pth']
    runner.train_loop._iter = 3  # a later validation, a better score: a new best checkpoint replaces it
    hook._save_best_checkpoint(runner, {'acc': 0.6})
    assert sorted(p.name for p in work.glob('best_*')) == ['best_acc_iter_3.pth']
    runner.train_loop._iter = 4  # once more, with the disk full: the save fails, the previous best stays
    half_writing_fdopen(monkeypatch, [], work)
    with pytest.raises(OSError, match=os.strerror(errno.ENOSPC)):
        hook._save_best_checkpoint(runner, {'acc': 0.7})
    assert sorted(p.name for p in work.glob('best_*')) == ['best_acc_iter_3.pth']
    with trusted_paths(str(work)):
        assert read_checkpoint(str(work / 'best_acc_iter_3.pth'))['meta']['iter'] == 3
