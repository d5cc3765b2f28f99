"""Deprecated: moved to :mod:`mmmila.checkpoint.loading` (``backbone_state_dict_from`` is
:func:`mmmila.checkpoint.keys.backbone_weights`); these names keep working until 0.2.0, with a warning."""
from mmmila._compat import moved_names

__getattr__ = moved_names(__name__, {
    'CheckpointMismatchError': 'mmmila.checkpoint.loading:CheckpointMismatchError',
    'CheckpointReadError': 'mmmila.checkpoint.loading:CheckpointReadError',
    'check_and_load': 'mmmila.checkpoint.loading:check_and_load',
    'load_pretrained_backbone': 'mmmila.checkpoint.loading:load_pretrained_backbone',
    'backbone_state_dict_from': 'mmmila.checkpoint.keys:backbone_weights',
})
