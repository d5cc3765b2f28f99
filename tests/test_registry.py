"""mmmila.registry.register: one function for every registry kind, idempotent, clear on bad input."""
from __future__ import annotations

import pytest
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from mmmila.registry import installed_registries, register


class _RegistryProbeHook(Hook):
    """A hook that exists only for this test."""


def test_register_is_idempotent_and_skips_missing_libraries():
    assert register('hooks', _RegistryProbeHook, libraries=('mmengine',)) == ['mmengine']
    assert HOOKS.module_dict['_RegistryProbeHook'] is _RegistryProbeHook
    assert register('hooks', _RegistryProbeHook, libraries=('mmengine', 'no_such_library')) == ['mmengine']
    assert HOOKS.module_dict['_RegistryProbeHook'] is _RegistryProbeHook
    assert register('hooks', _RegistryProbeHook, libraries=('no_such_library',)) == []


def test_unknown_kind_is_named():
    with pytest.raises(ValueError, match="unknown registry kind 'widgets'; choose from"):
        register('widgets', _RegistryProbeHook)
    with pytest.raises(ValueError, match="unknown registry kind 'widgets'"):
        installed_registries('widgets')


@pytest.mark.parametrize('library', ['mmpretrain', 'mmdet', 'mmseg'])
def test_import_mmmila_registered_the_backbone_in_each_installed_library(library):
    import mmmila  # noqa: F401
    from mmmila.models import MILA
    registry = installed_registries('models', (library,))[library]
    assert registry.module_dict['MILA'] is MILA
