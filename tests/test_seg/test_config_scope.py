"""``mmseg::`` config bases load on both stacks, for mmmila's configs and a user's that inherits them.

OneDL's mmengine looks the ``mmseg`` scope up as the distribution ``mmsegmentation``, which OneDL names
``onedl-mmsegmentation``; ``import mmmila`` maps the scope to its module (docs/install.md).
"""
from __future__ import annotations

import subprocess
import sys

from mmengine.config import Config
from mmengine.config.utils import MODULE2PACKAGE

from mmmila.integration import resolve_config_scopes

from ..conftest import REPO

T_CONFIG = REPO / 'configs' / 'upernet_mila_t_512x512_160k_ade20k.py'


def test_scope_of_a_missing_distribution_maps_to_its_module(monkeypatch, tmp_path):
    """The mechanism, on either stack: a table entry naming a distribution that is not installed."""
    monkeypatch.setitem(MODULE2PACKAGE, 'mmseg', 'mmsegmentation-not-installed')
    resolve_config_scopes()
    assert MODULE2PACKAGE['mmseg'] == 'mmseg'
    cfg = Config.fromfile(str(T_CONFIG))
    assert cfg.default_scope == 'mmseg' and cfg.param_scheduler[1].type == 'PolyLR'
    assert cfg.default_hooks.checkpoint.interval == 16000  # from mmseg's schedule_160k.py


def test_scope_of_an_installed_distribution_is_kept(monkeypatch):
    monkeypatch.setitem(MODULE2PACKAGE, 'mmdet', 'mmdet')
    monkeypatch.setitem(MODULE2PACKAGE, 'mmnothing', 'mmnothing-dist')  # neither distribution nor module
    resolve_config_scopes()
    assert MODULE2PACKAGE['mmdet'] == 'mmdet' and MODULE2PACKAGE['mmnothing'] == 'mmnothing-dist'


def test_users_config_inheriting_ours_loads_after_import_mmmila(tmp_path):
    """In a fresh interpreter on the installed stack, as a user's script or mmmila's tools do it."""
    user = tmp_path / 'my_upernet.py'
    user.write_text(f'_base_ = [{str(T_CONFIG)!r}]\nmodel = dict(decode_head=dict(num_classes=19))\n')
    probe = ('import mmmila\nfrom mmengine.config import Config\n'
             f'cfg = Config.fromfile({str(user)!r})\n'
             'print("LOADED", cfg.default_scope, cfg.model.decode_head.num_classes, cfg.train_cfg.max_iters)')
    res = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'LOADED mmseg 19 160000' in res.stdout.splitlines()
