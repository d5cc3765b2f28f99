"""Key conversion between the authors' checkpoint format and mmmila's own. Pure functions.

The authors' format: the state dict of their classification model (``patch_embed.*``,
``layers.*``, ``norm.*``, ``head.*``, plus ``*.attn.rope.rotations`` buffers for a 224 input),
stored under ``model`` (their released ``MLLA_{T,S,B}.pth`` files and their training files).
mmmila's format is mmpretrain's classifier layout: ``backbone.*`` (the final LayerNorm as
``backbone.norm3.*``) and ``head.fc.*``, stored under ``state_dict``.

:data:`AUTHORS_TO_MMMILA` is the one mapping between the two; every conversion reads it.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch

# (authors' prefix, mmmila's prefix), the first that matches wins; a key keeps its remainder.
AUTHORS_TO_MMMILA = (('head.', 'head.fc.'), ('norm.', 'backbone.norm3.'), ('', 'backbone.'))
ROPE_SUFFIX = '.attn.rope.rotations'
# A key only the authors' format has: their stem's first convolution, at the root.
AUTHORS_MARKER = 'patch_embed.conv1.conv.weight'


def extract_state_dict(ckpt: dict) -> dict:
    """The weights of a checkpoint dict: ``state_dict``, else ``model``, else the dict itself."""
    if not isinstance(ckpt, dict):
        raise ValueError(f'a checkpoint must be a dict, got {type(ckpt).__name__}')
    for key in ('state_dict', 'model'):
        if key in ckpt and isinstance(ckpt[key], dict):
            return ckpt[key]
    return ckpt


def is_authors_format(state_dict: dict) -> bool:
    """True for the authors' key layout (``patch_embed.*`` at the root, no ``backbone.`` prefix)."""
    return AUTHORS_MARKER in state_dict


def is_rope_buffer(key: str) -> bool:
    """True for the authors' RoPE tables (``*.attn.rope.rotations``), which mmmila recomputes per input."""
    return key.endswith(ROPE_SUFFIX)


def mmmila_key(authors_key: str) -> str:
    """mmmila's name of one of the authors' keys (RoPE buffers have none: see :func:`is_rope_buffer`)."""
    for theirs, ours in AUTHORS_TO_MMMILA:
        if authors_key.startswith(theirs):
            return ours + authors_key[len(theirs):]
    raise AssertionError('unreachable: the last prefix is empty')


def authors_key(key: str) -> str | None:
    """The authors' name of one of mmmila's classifier keys; None for the dense-prediction output
    norms ``backbone.norm0``-``norm2``, which their classifier does not have.

    Raises:
        ValueError: the key is neither ``backbone.*`` nor ``head.fc.*``.
    """
    if key.startswith('backbone.norm') and key[len('backbone.norm'):][:1].isdigit() \
            and not key.startswith('backbone.norm3.'):
        return None
    for theirs, ours in AUTHORS_TO_MMMILA:
        if ours and key.startswith(ours):
            return theirs + key[len(ours):]
    raise ValueError(f'key {key!r} is neither backbone.* nor head.fc.*: not an mmmila MILA classifier')


def authors_to_mmmila(state_dict: dict) -> OrderedDict:
    """The authors' classifier keys -> mmpretrain classifier keys; the RoPE buffers are dropped."""
    return OrderedDict((mmmila_key(k), v) for k, v in state_dict.items() if not is_rope_buffer(k))


def rope_rotations(height: int, width: int, channels: int, base: float = 10000.0) -> torch.Tensor:
    """The authors' ``attn.rope.rotations`` buffer: (H, W, C/2, 2) = (cos, sin) of each pair's angle."""
    k = channels // 4
    theta = base ** (-torch.arange(k, dtype=torch.float32) / k)
    rows = torch.arange(height, dtype=torch.float32)[:, None, None] * theta
    cols = torch.arange(width, dtype=torch.float32)[None, :, None] * theta
    angles = torch.cat([rows.expand(height, width, k), cols.expand(height, width, k)], dim=-1)
    return torch.stack([angles.cos(), angles.sin()], dim=-1)


def mmmila_to_authors(state_dict: dict, img_size: int = 224) -> OrderedDict:
    """mmpretrain classifier keys -> the authors' keys, rebuilding the RoPE buffers for ``img_size``."""
    out = OrderedDict()
    for key, value in state_dict.items():
        theirs = authors_key(key)
        if theirs is None:
            continue  # dense-prediction output norms have no counterpart in the classifier
        out[theirs] = value
        if key.startswith('backbone.') and key.endswith('.attn.lepe.bias'):
            stage = int(key.split('.')[2])
            side = math.ceil(img_size / 4 / 2**stage)
            out[theirs[:-len('.lepe.bias')] + '.rope.rotations'] = rope_rotations(side, side, value.shape[0])
    return out


def backbone_weights(state_dict: dict, out_indices: tuple[int, ...], prefix: str | None = None
                     ) -> tuple[dict, dict[str, str]]:
    """A checkpoint's weights as MILA backbone keys (no ``backbone.`` prefix).

    Args:
        state_dict (dict): the checkpoint's weights (the authors' format or mmmila's).
        out_indices (tuple[int]): the backbone's output stages; with ``(3,)`` (classification) the
            classifier's final norm initialises ``norm3``, otherwise it is not used.
        prefix (str | None): for mmmila's format, take only keys under this prefix (e.g.
            ``'backbone.'``); by default ``'backbone.'`` is used when such keys exist.

    Returns:
        tuple[dict, dict]: the backbone's weights, and the ignored keys (as the checkpoint names
        them) with the reason for each.
    """
    ignored: dict[str, str] = {}
    out = {}
    if is_authors_format(state_dict):
        for key, value in state_dict.items():
            if is_rope_buffer(key):
                ignored[key] = 'RoPE table, recomputed for each input size'
                continue
            ours = mmmila_key(key)
            if ours.startswith('head.'):
                ignored[key] = 'classification head, not part of the backbone'
            elif ours.startswith('backbone.norm3.') and tuple(out_indices) != (3,):
                ignored[key] = "classifier's final norm; dense prediction uses fresh norm0-norm3"
            else:
                out[ours[len('backbone.'):]] = value
        return out, ignored
    if prefix is None and any(k.startswith('backbone.') for k in state_dict):
        prefix = 'backbone.'
    for key, value in state_dict.items():
        if prefix and not key.startswith(prefix):
            ignored[key] = f'outside {prefix!r}'
            continue
        key = key[len(prefix):] if prefix else key
        if is_rope_buffer(key):
            ignored[key] = 'RoPE table, recomputed for each input size'
        else:
            out[key] = value
    return out, ignored
