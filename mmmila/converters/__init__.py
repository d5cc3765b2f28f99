"""Deprecated: the checkpoint code moved to :mod:`mmmila.checkpoint` (key mapping in ``keys``,
loading into a model in ``loading``); these names keep working until 0.2.0, with a warning."""
from mmmila._compat import moved_names

__getattr__ = moved_names(__name__, {
    'CheckpointMismatchError': 'mmmila.checkpoint.loading:CheckpointMismatchError',
    'check_and_load': 'mmmila.checkpoint.loading:check_and_load',
    'load_pretrained_backbone': 'mmmila.checkpoint.loading:load_pretrained_backbone',
    'extract_state_dict': 'mmmila.checkpoint.keys:extract_state_dict',
    'is_official': 'mmmila.checkpoint.keys:is_authors_format',
    'official_to_mmmila': 'mmmila.checkpoint.keys:authors_to_mmmila',
    'mmmila_to_official': 'mmmila.checkpoint.keys:mmmila_to_authors',
})
