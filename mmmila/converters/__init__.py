"""Checkpoint formats: the authors' released files and mmmila's own."""
from .loading import CheckpointMismatchError, check_and_load, load_pretrained_backbone
from .official import extract_state_dict, is_official, mmmila_to_official, official_to_mmmila

__all__ = ['CheckpointMismatchError', 'check_and_load', 'extract_state_dict', 'is_official',
           'load_pretrained_backbone', 'mmmila_to_official', 'official_to_mmmila']
