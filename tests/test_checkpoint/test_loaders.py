"""The trust policy holds for every loader of mmengine, on OpenMMLab's mmengine and on OneDL's.

Each test serves a plain checkpoint and one whose unpickling runs code from local bytes (a local
folder, an HTTP server on 127.0.0.1, a storage backend or a pavi client that hand back local bytes),
reads both through the loader as mmengine resolves it (``CheckpointLoader``, ``_load_checkpoint``,
``load_checkpoint``) and through mmengine's loader function called directly, and shows that the
plain one loads and the other one is refused before its code runs.
"""
from __future__ import annotations

import functools
import http.server
import json
import pickle
import shutil
import sys
import threading
import types
from pathlib import Path

import pytest
import torch
from mmengine.fileio import backends as file_backends
from mmengine.runner import checkpoint as mmengine_checkpoint

import mmmila  # noqa: F401  (installs the policy into mmengine, as a config's custom_imports does)

from .helpers import save_payload_checkpoint

WEIGHTS = {'fc.weight': torch.arange(4.0).view(1, 4), 'fc.bias': torch.ones(1)}


class Served:
    """A folder of two checkpoints: ``plain.pth`` (weights only) and ``payload.pth`` (runs code)."""

    def __init__(self, root: Path):
        self.root = root / 'served'
        self.root.mkdir()
        self.marker = root / 'payload_ran'
        torch.save({'state_dict': WEIGHTS}, self.root / 'plain.pth')
        save_payload_checkpoint(self.root / 'payload.pth', self.marker)

    def check(self, uri_of, direct) -> None:
        """Every way of loading ``uri_of(kind)`` returns the plain weights, and refuses the payload
        without running it: mmengine's scheme table, ``_load_checkpoint``, ``load_checkpoint`` and the
        loader function ``direct`` called as it is."""
        def into_model(uri, map_location):
            model = torch.nn.Module()
            model.fc = torch.nn.Linear(4, 1)
            ckpt = mmengine_checkpoint.load_checkpoint(model, uri, map_location, strict=True)
            assert torch.equal(model.fc.weight.detach(), WEIGHTS['fc.weight'])
            return ckpt

        ways = {'CheckpointLoader': mmengine_checkpoint.CheckpointLoader.load_checkpoint,
                '_load_checkpoint': mmengine_checkpoint._load_checkpoint,
                'load_checkpoint': into_model,
                direct.__name__: direct}
        for way, load in ways.items():
            ckpt = load(uri_of('plain'), map_location='cpu')
            assert torch.equal(ckpt['state_dict']['fc.weight'], WEIGHTS['fc.weight']), way
            with pytest.raises(pickle.UnpicklingError):  # mmmila's UntrustedCheckpointError is one
                load(uri_of('payload'), map_location='cpu')
            assert not self.marker.exists(), f'{way} ran the code of {uri_of("payload")}'


@pytest.fixture
def served(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))  # where downloads are cached
    monkeypatch.delenv('MMMILA_TRUSTED_CHECKPOINTS', raising=False)
    return Served(tmp_path)


@pytest.fixture
def http_root(served):
    """An HTTP server on 127.0.0.1 serving ``served.root``; yields its base URL."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0),
                                             functools.partial(Quiet, directory=str(served.root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_address[1]}'
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_local_path(served):
    served.check(lambda kind: str(served.root / f'{kind}.pth'), mmengine_checkpoint.load_from_local)


def test_http(served, http_root):
    served.check(lambda kind: f'{http_root}/{kind}.pth', mmengine_checkpoint.load_from_http)


def test_https(served, monkeypatch):
    """No TLS server here: the download itself hands back the local bytes of the requested file."""
    requested = []

    def download(url, dst, *args, **kwargs):
        requested.append(url)
        shutil.copy(served.root / url.rpartition('/')[2], dst)

    monkeypatch.setattr(torch.hub, 'download_url_to_file', download)
    served.check(lambda kind: f'https://models.invalid/{kind}.pth', mmengine_checkpoint.load_from_http)
    assert requested and all(url.startswith('https://models.invalid/') for url in requested)


@pytest.mark.parametrize('mapped_to', ['file', 'url'])
def test_open_mmlab(served, http_root, tmp_path, monkeypatch, mapped_to):
    """``open-mmlab://NAME`` as mmengine maps it: through $MMENGINE_HOME/open_mmlab.json, to a file
    under $MMENGINE_HOME or to a URL."""
    home = tmp_path / 'mmengine_home'
    home.mkdir()
    table = {}
    for kind in ('plain', 'payload'):
        if mapped_to == 'file':
            shutil.copy(served.root / f'{kind}.pth', home / f'{kind}.pth')
            table[f'mmmila_{kind}'] = f'{kind}.pth'
        else:
            table[f'mmmila_{kind}'] = f'{http_root}/{kind}.pth'
    (home / 'open_mmlab.json').write_text(json.dumps(table))
    monkeypatch.setenv('MMENGINE_HOME', str(home))
    served.check(lambda kind: f'open-mmlab://mmmila_{kind}', mmengine_checkpoint.load_from_openmmlab)


@pytest.mark.parametrize('scheme', ['s3', 'petrel'])
def test_ceph(served, monkeypatch, scheme):
    """mmengine reads ``s3://`` and ``petrel://`` through its 'petrel' storage backend; here a backend
    whose ``get`` returns a local file's bytes plays petrel_client's part."""
    class LocalBytesBackend:
        def __init__(self, **kwargs):
            pass

        def get(self, filepath) -> bytes:
            return (served.root / str(filepath).rpartition('/')[2]).read_bytes()

    monkeypatch.setitem(file_backends.backends, 'petrel', LocalBytesBackend)
    served.check(lambda kind: f'{scheme}://bucket/{kind}.pth', mmengine_checkpoint.load_from_ceph)


def test_pavi(served, monkeypatch):
    """pavi's model cloud: ``modelcloud.get(path)`` is a model whose ``download(dst)`` writes the file."""
    class Model:
        def __init__(self, path):
            self.name = path.rpartition('/')[2]

        def download(self, dst):
            shutil.copy(served.root / self.name, dst)

    pavi = types.ModuleType('pavi')
    pavi.modelcloud = types.SimpleNamespace(get=Model)
    monkeypatch.setitem(sys.modules, 'pavi', pavi)
    served.check(lambda kind: f'pavi://project/{kind}.pth', mmengine_checkpoint.load_from_pavi)
