"""The trust policy itself: weights-only by default, full unpickling only for trusted files."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint

from mmmila.checkpoint import (TRUST_ENV, UntrustedCheckpointError, load_checkpoint_file, trust_reason,
                               trusted_paths)
from mmmila.integration import install, load_from_url

from .helpers import Payload, RunNote, save_payload_checkpoint


@pytest.fixture
def payload(tmp_path):
    """(checkpoint path, marker path): the marker appears only if the payload ran."""
    downloads = tmp_path / 'downloads'
    downloads.mkdir()
    marker = tmp_path / 'payload_ran'
    return save_payload_checkpoint(downloads / 'weights.pth', marker), marker


def test_import_installs_policy_once():
    loader = CheckpointLoader._get_checkpoint_loader('/some/file.pth')
    assert loader.__module__ == 'mmmila.integration'
    assert CheckpointLoader._get_checkpoint_loader('https://host/x.pth').__module__ == 'mmmila.integration'
    from mmengine.runner import Runner
    from mmengine.runner import checkpoint as ckpt_module
    wrapped = (Runner.load_checkpoint, ckpt_module.load_state_dict)
    install()  # idempotent: nothing is wrapped twice
    assert (Runner.load_checkpoint, ckpt_module.load_state_dict) == wrapped
    assert getattr(wrapped[0].__mmmila_original__, '__mmmila_original__', None) is None


def test_plain_weights_load_without_trust(tmp_path):
    sd = {'w': torch.randn(3, 2), 'nested': {'b': torch.arange(4)}, 'epoch': 3}
    torch.save(sd, tmp_path / 'plain.pth')
    out = load_checkpoint_file(str(tmp_path / 'plain.pth'))
    assert torch.equal(out['w'], sd['w']) and torch.equal(out['nested']['b'], sd['nested']['b'])
    assert out['epoch'] == 3


def test_payload_refused_with_clear_error(payload):
    path, marker = payload
    with pytest.raises(UntrustedCheckpointError) as info:
        load_checkpoint_file(str(path))
    message = str(info.value)
    assert str(path) in message and TRUST_ENV in message and 'exec' in message
    assert message.count('. ') == 0 and message.endswith('.')  # one sentence
    assert not marker.exists()


def test_env_var_trusts_a_file_or_a_folder(payload, monkeypatch):
    path, marker = payload
    other = path.parent.parent / 'other'
    monkeypatch.setenv(TRUST_ENV, os.pathsep.join([str(other), str(path)]))
    assert 'named in' in trust_reason(str(path))
    load_checkpoint_file(str(path))
    assert marker.read_text() == 'unpickled'  # trusted: the full unpickler ran it, as asked
    marker.unlink()
    monkeypatch.setenv(TRUST_ENV, str(path.parent))  # a folder trusts what is under it
    _load_checkpoint(str(path))
    assert marker.exists()
    monkeypatch.setenv(TRUST_ENV, str(path.parent) + '_sibling')  # a prefix is not a parent folder
    assert trust_reason(str(path)) is None


def test_trusted_paths_is_scoped(payload):
    path, marker = payload
    with trusted_paths(str(path.parent)):
        assert trust_reason(str(path)) is not None
    assert trust_reason(str(path)) is None
    with pytest.raises(UntrustedCheckpointError):
        load_checkpoint_file(str(path))
    assert not marker.exists()


def test_symlink_in_trusted_folder_to_outside_file_is_not_trusted(payload, tmp_path):
    path, marker = payload
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    (work_dir / 'linked.pth').symlink_to(path)
    with trusted_paths(str(work_dir)):
        with pytest.raises(UntrustedCheckpointError):
            load_checkpoint_file(str(work_dir / 'linked.pth'))
    assert not marker.exists()


def test_data_only_types_load_without_trust(tmp_path):
    """numpy arrays/scalars and mmengine's HistoryBuffer (what a Runner's checkpoint holds)."""
    buffer = HistoryBuffer()
    for v in (1.0, 3.0, 2.0):
        buffer.update(v)
    torch.save({'hub': {'loss': buffer}, 'arr': np.arange(5.0), 'scalar': np.float64(2.5),
                'ints': np.array([[1, 2]], dtype=np.int32)}, tmp_path / 'data.pth')
    out = load_checkpoint_file(str(tmp_path / 'data.pth'))
    assert isinstance(out['hub']['loss'], HistoryBuffer)
    assert out['hub']['loss'].mean() == pytest.approx(2.0) and out['hub']['loss'].max() == 3.0
    np.testing.assert_array_equal(out['arr'], np.arange(5.0))
    assert out['scalar'] == 2.5 and out['ints'].dtype == np.int32


def test_getattr_is_limited_to_history_statistics(tmp_path):
    class Reference:
        def __init__(self, name):
            self.name = name

        def __reduce__(self):
            return getattr, (HistoryBuffer, self.name)

    torch.save({'m': Reference('mean')}, tmp_path / 'stat.pth')
    assert load_checkpoint_file(str(tmp_path / 'stat.pth'))['m'] is HistoryBuffer.mean
    torch.save({'m': Reference('update')}, tmp_path / 'method.pth')
    with pytest.raises(UntrustedCheckpointError, match=r"getattr\(HistoryBuffer, 'update'\)"):
        load_checkpoint_file(str(tmp_path / 'method.pth'))


def test_custom_objects_need_trust(tmp_path):
    torch.save({'note': RunNote(4)}, tmp_path / 'note.pth')
    with pytest.raises(UntrustedCheckpointError, match='RunNote'):
        load_checkpoint_file(str(tmp_path / 'note.pth'))
    with trusted_paths(str(tmp_path / 'note.pth')):
        assert load_checkpoint_file(str(tmp_path / 'note.pth'))['note'].iteration == 4


def test_url_loader_downloads_then_applies_policy(tmp_path, payload):
    path, marker = payload
    torch.save({'w': torch.ones(2)}, tmp_path / 'remote.pth')
    cache = tmp_path / 'cache'
    out = load_from_url((tmp_path / 'remote.pth').as_uri(), model_dir=str(cache))
    assert torch.equal(out['w'], torch.ones(2)) and (cache / 'remote.pth').is_file()
    with pytest.raises(UntrustedCheckpointError, match='downloaded to .*cache'):
        load_from_url(path.as_uri(), model_dir=str(cache))
    assert not marker.exists()


def test_missing_file_and_non_dict(tmp_path):
    with pytest.raises(FileNotFoundError, match='nothere.pth'):
        load_checkpoint_file(str(tmp_path / 'nothere.pth'))
    torch.save(torch.zeros(2), tmp_path / 'tensor.pth')
    with pytest.raises(ValueError, match='holds a Tensor, not a dict'):
        load_checkpoint_file(str(tmp_path / 'tensor.pth'))


def test_payload_class_really_runs_when_unpickled(tmp_path):
    """The payload used by these tests does run code under a plain unpickler (so the tests can fail)."""
    import pickle
    marker = tmp_path / 'ran'
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()
