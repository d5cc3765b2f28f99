"""Key conversion between the authors' checkpoints and mmmila's own format. Pure functions.

The authors' format: the classification model's state dict (``patch_embed.*``, ``layers.*``,
``norm.*``, ``head.*``, plus ``*.attn.rope.rotations`` buffers for a 224 input), stored under
``model``. mmmila's own format is mmpretrain's classifier layout: ``backbone.*`` (the final
LayerNorm as ``backbone.norm3.*``) and ``head.fc.*``, stored under ``state_dict``.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch

ROPE_SUFFIX = '.attn.rope.rotations'


def extract_state_dict(ckpt: dict) -> dict:
    """The weights of a checkpoint dict: ``state_dict``, else ``model``, else the dict itself."""
    if not isinstance(ckpt, dict):
        raise ValueError(f'a checkpoint must be a dict, got {type(ckpt).__name__}')
    for key in ('state_dict', 'model'):
        if key in ckpt and isinstance(ckpt[key], dict):
            return ckpt[key]
    return ckpt


def is_official(state_dict: dict) -> bool:
    """True for the authors' key layout (``patch_embed.*`` at the root, no ``backbone.`` prefix)."""
    return 'patch_embed.conv1.conv.weight' in state_dict


def is_rope_buffer(key: str) -> bool:
    return key.endswith(ROPE_SUFFIX)


def official_to_mmmila(state_dict: dict) -> OrderedDict:
    """Authors' classifier keys -> mmpretrain classifier keys; the rope buffers are dropped."""
    out = OrderedDict()
    for key, value in state_dict.items():
        if is_rope_buffer(key):
            continue
        if key.startswith('head.'):
            out['head.fc.' + key[len('head.'):]] = value
        elif key.startswith('norm.'):
            out['backbone.norm3.' + key[len('norm.'):]] = value
        else:
            out['backbone.' + key] = value
    return out


def rope_rotations(height: int, width: int, channels: int, base: float = 10000.0) -> torch.Tensor:
    """The authors' ``attn.rope.rotations`` buffer: (H, W, C/2, 2) = (cos, sin) of each pair's angle."""
    k = channels // 4
    theta = base ** (-torch.arange(k, dtype=torch.float32) / k)
    rows = torch.arange(height, dtype=torch.float32)[:, None, None] * theta
    cols = torch.arange(width, dtype=torch.float32)[None, :, None] * theta
    angles = torch.cat([rows.expand(height, width, k), cols.expand(height, width, k)], dim=-1)
    return torch.stack([angles.cos(), angles.sin()], dim=-1)


def mmmila_to_official(state_dict: dict, img_size: int = 224) -> OrderedDict:
    """mmpretrain classifier keys -> the authors' keys, rebuilding the rope buffers for ``img_size``."""
    out = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith('head.fc.'):
            out['head.' + key[len('head.fc.'):]] = value
        elif key.startswith('backbone.norm3.'):
            out['norm.' + key[len('backbone.norm3.'):]] = value
        elif key.startswith('backbone.norm') and key[len('backbone.norm')].isdigit():
            continue  # dense-prediction output norms have no counterpart in the classifier
        elif key.startswith('backbone.'):
            out[key[len('backbone.'):]] = value
            if key.endswith('.attn.lepe.bias'):
                stage = int(key.split('.')[2])
                side = math.ceil(img_size / 4 / 2**stage)
                rope_key = key[len('backbone.'):-len('.lepe.bias')] + '.rope.rotations'
                out[rope_key] = rope_rotations(side, side, value.shape[0])
        else:
            raise ValueError(f'key {key!r} is neither backbone.* nor head.fc.*: not an mmmila MILA classifier')
    return out
