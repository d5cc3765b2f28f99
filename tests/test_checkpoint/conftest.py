"""Runners, init_detector and the inferencers make their scope the current default scope; the
tests here put the previous one back, so that later tests build from the registries they expect."""
from __future__ import annotations

from collections import OrderedDict

import pytest
from mmengine.registry import DefaultScope


def _kept_scope():
    saved = OrderedDict(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict = saved


# Module-scoped too, for module-scoped fixtures that build a Runner.
_restore_default_scope_per_module = pytest.fixture(scope='module', autouse=True)(_kept_scope)
_restore_default_scope = pytest.fixture(autouse=True)(_kept_scope)
