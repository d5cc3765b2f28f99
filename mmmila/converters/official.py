"""Deprecated: moved to :mod:`mmmila.checkpoint.keys` (the authors' format is called that
everywhere now); these names keep working until 0.2.0, with a warning."""
from mmmila._compat import moved_names

__getattr__ = moved_names(__name__, {
    'ROPE_SUFFIX': 'mmmila.checkpoint.keys:ROPE_SUFFIX',
    'extract_state_dict': 'mmmila.checkpoint.keys:extract_state_dict',
    'is_official': 'mmmila.checkpoint.keys:is_authors_format',
    'is_rope_buffer': 'mmmila.checkpoint.keys:is_rope_buffer',
    'official_to_mmmila': 'mmmila.checkpoint.keys:authors_to_mmmila',
    'mmmila_to_official': 'mmmila.checkpoint.keys:mmmila_to_authors',
    'rope_rotations': 'mmmila.checkpoint.keys:rope_rotations',
})
