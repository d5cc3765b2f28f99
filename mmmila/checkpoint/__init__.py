"""Checkpoints: the key mapping between the authors' format and mmmila's (:mod:`.keys`), reading a
file safely under the trust policy (:mod:`.reading`), and loading weights into a model
(:mod:`.loading`). None of it knows mmengine's Runner: ``mmmila/integration.py`` puts the policy
and the on-the-fly conversion into mmengine.
"""
from mmmila.checkpoint.keys import (authors_to_mmmila, backbone_weights, extract_state_dict,
                                    is_authors_format, mmmila_to_authors)
from mmmila.checkpoint.loading import (CheckpointMismatchError, CheckpointReadError, check_and_load,
                                       load_pretrained_backbone)
from mmmila.checkpoint.reading import (TRUST_ENV, UntrustedCheckpointError, load_checkpoint_file,
                                       read_checkpoint, read_url, trust_reason, trusted_paths)

__all__ = ['TRUST_ENV', 'CheckpointMismatchError', 'CheckpointReadError', 'UntrustedCheckpointError',
           'authors_to_mmmila', 'backbone_weights', 'check_and_load', 'extract_state_dict',
           'is_authors_format', 'load_checkpoint_file', 'load_pretrained_backbone', 'mmmila_to_authors',
           'read_checkpoint', 'read_url', 'trust_reason', 'trusted_paths']
