"""Resume and load_from through mmengine's Runner on torch >= 2.6 (toy model on the CPU)."""
from __future__ import annotations

import time

import pytest
import torch

from mmmila.checkpoint import TRUST_ENV, UntrustedCheckpointError, load_checkpoint_file, trusted_paths

from .helpers import Interrupted, NoteInCheckpoint, Probe, StopAt, snapshot, toy_runner


def wait_for_new_timestamp(runner) -> None:
    # mmengine names a run's log folder by the second it starts: a second run must start later.
    while time.strftime('%Y%m%d_%H%M%S') == runner.timestamp:
        time.sleep(0.05)


def final_state(runner) -> tuple[dict, dict]:
    model = {k: v.clone() for k, v in runner.model.state_dict().items()}
    return model, runner.optim_wrapper.optimizer.state_dict()


def assert_same_optimizer_state(ours: dict, ref: dict) -> None:
    assert ours['state'].keys() == ref['state'].keys()
    for idx, slots in ref['state'].items():
        for name, value in slots.items():
            torch.testing.assert_close(ours['state'][idx][name], value, rtol=0, atol=0)
    assert [g['lr'] for g in ours['param_groups']] == pytest.approx([g['lr'] for g in ref['param_groups']])


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    """An uninterrupted run of 6 iterations."""
    runner = toy_runner(tmp_path_factory.mktemp('reference') / 'work', max_iters=6)
    runner.train()
    return final_state(runner)


def test_interrupted_run_resumes_at_saved_iteration(tmp_path, reference):
    work_dir = tmp_path / 'work'
    first = toy_runner(work_dir, hooks=[StopAt(3), NoteInCheckpoint()])
    with pytest.raises(Interrupted):
        first.train()
    assert (work_dir / 'last_checkpoint').read_text().strip().endswith('iter_2.pth')
    # The hook's object makes the checkpoint need the full unpickler: only the work_dir trust allows it.
    with pytest.raises(UntrustedCheckpointError, match=TRUST_ENV):
        load_checkpoint_file(str(work_dir / 'iter_2.pth'))
    with trusted_paths(str(work_dir)):
        saved = load_checkpoint_file(str(work_dir / 'iter_2.pth'))
    before = snapshot(work_dir)

    wait_for_new_timestamp(first)
    probe = Probe()
    second = toy_runner(work_dir, hooks=[probe, NoteInCheckpoint()], resume=True)
    second.train()

    assert probe.iter == 2 and second.iter == 6
    assert_same_optimizer_state(probe.optimizer_state, saved['optimizer'])
    model, optimizer = final_state(second)
    for key, value in reference[0].items():
        torch.testing.assert_close(model[key], value, rtol=0, atol=0)
    assert_same_optimizer_state(optimizer, reference[1])
    after = snapshot(work_dir)
    assert {k: after[k] for k in before if k != 'last_checkpoint'} == \
        {k: v for k, v in before.items() if k != 'last_checkpoint'}  # nothing overwritten or lost
    assert {'iter_4.pth', 'iter_6.pth'} <= set(after)
    assert (work_dir / 'last_checkpoint').read_text().strip().endswith('iter_6.pth')


def test_load_from_own_checkpoint(tmp_path, reference):
    work_dir = tmp_path / 'work'
    toy_runner(work_dir, max_iters=2, hooks=[NoteInCheckpoint()]).train()
    plain = tmp_path / 'plain'
    toy_runner(plain, max_iters=2).train()

    # In its own work_dir (the same config run again), a checkpoint holding objects loads.
    runner = toy_runner(work_dir, max_iters=2, load_from=str(work_dir / 'iter_2.pth'))
    runner.load_or_resume()
    saved = torch.load(work_dir / 'iter_2.pth', weights_only=False)['state_dict']
    torch.testing.assert_close(runner.model.fc.weight, saved['fc.weight'], rtol=0, atol=0)
    # From another run's work_dir: a data-only checkpoint loads without trust ...
    elsewhere = toy_runner(tmp_path / 'other', max_iters=2, load_from=str(plain / 'iter_2.pth'))
    elsewhere.load_or_resume()
    assert not torch.equal(elsewhere.model.fc.weight, toy_runner(tmp_path / 'fresh').model.fc.weight)
    # ... one holding objects needs the user's word.
    refused = toy_runner(tmp_path / 'other2', max_iters=2, load_from=str(work_dir / 'iter_2.pth'))
    with pytest.raises(UntrustedCheckpointError, match='iter_2.pth'):
        refused.load_or_resume()
