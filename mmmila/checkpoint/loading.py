"""Loading weights into a model: strict checks, and a pretrained checkpoint into a MILA backbone
(the ``init_cfg`` Pretrained path).

Accepts the authors' format (e.g. their released ``MLLA_{T,S,B}.pth``: ``model`` holding the
classifier's state dict) and mmmila's own (``backbone.*`` keys, e.g. a classifier or detector trained here).
Every key of the checkpoint must be used and every parameter of the backbone must be filled, apart
from an explicit allow-list that is logged: the rope buffers (recomputed per input size), the
classifier's ``norm``/``head`` when the backbone is used for dense prediction, and the output norms
``norm{i}`` that the checkpoint does not have (they start fresh).
"""
from __future__ import annotations

import logging

import torch.nn as nn

from mmmila.checkpoint.keys import backbone_weights, extract_state_dict
from mmmila.checkpoint.reading import load_checkpoint_file


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model it is loaded into."""


class CheckpointReadError(OSError):
    """A checkpoint file could not be read (missing, truncated, not a torch file)."""


def _describe(keys, shapes, limit=5) -> str:
    keys = list(keys)  # checkpoint / model order: the first mismatch is named first
    text = ', '.join(f'{k} {tuple(shapes[k]) if k in shapes else ""}'.strip() for k in keys[:limit])
    return text + (f' ... ({len(keys)} in all)' if len(keys) > limit else '')


def check_and_load(model: nn.Module, weights: dict, source: str) -> list[str]:
    """Load ``weights`` into ``model`` after checking keys and shapes; return the fresh keys.

    Raises:
        CheckpointMismatchError: on unexpected keys, shape mismatches, or missing keys other than
            the output norms ``norm{i}``.
    """
    own = model.state_dict()
    own_shapes = {k: v.shape for k, v in own.items()}
    ckpt_shapes = {k: getattr(v, 'shape', ()) for k, v in weights.items()}
    unexpected = [k for k in weights if k not in own]
    mismatched = [k for k in weights if k in own and tuple(ckpt_shapes[k]) != tuple(own_shapes[k])]
    missing = [k for k in own if k not in weights]
    fresh = [k for k in missing if k.split('.')[0] in {f'norm{i}' for i in range(4)}]
    missing = [k for k in missing if k not in fresh]
    problems = []
    if mismatched:
        problems.append('shape mismatch (checkpoint vs model): ' + '; '.join(
            f'{k} {tuple(ckpt_shapes[k])} vs {tuple(own_shapes[k])}' for k in mismatched[:5]))
    if unexpected:
        problems.append('keys not in the model: ' + _describe(unexpected, ckpt_shapes))
    if missing:
        problems.append('model keys missing from the checkpoint: ' + _describe(missing, own_shapes))
    if problems:
        raise CheckpointMismatchError(
            f'{source} does not fit this {type(model).__name__} (wrong variant or not a MILA checkpoint?): '
            + ' | '.join(problems))
    model.load_state_dict(weights, strict=False)
    return fresh


def load_pretrained_backbone(model: nn.Module, init_cfg: dict, logger: logging.Logger | None = None) -> None:
    """Load ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix=None)`` into a MILA backbone.

    ``model`` needs ``out_indices`` (the stages it returns) and MILA's parameter names; the file is
    read under the trust policy (:func:`~mmmila.checkpoint.reading.load_checkpoint_file`).
    """
    if 'checkpoint' not in init_cfg:
        raise ValueError("init_cfg of type 'Pretrained' needs a 'checkpoint' path")
    path = init_cfg['checkpoint']
    try:
        ckpt = load_checkpoint_file(path, map_location='cpu')
    except Exception as err:
        if str(path) in str(err):  # already names the file (e.g. the trust policy's errors)
            raise
        raise CheckpointReadError(f'could not read checkpoint {path!r}: {err}') from err
    weights, ignored = backbone_weights(extract_state_dict(ckpt), model.out_indices,
                                                init_cfg.get('prefix'))
    fresh = check_and_load(model, weights, f'checkpoint {path!r}')
    if logger is not None:
        reasons: dict[str, list[str]] = {}
        for key, why in ignored.items():
            reasons.setdefault(why, []).append(key)
        parts = [f'{len(v)} key(s) not loaded ({why}): ' + ', '.join(sorted(v)[:4]) + (' ...' if len(v) > 4 else '')
                 for why, v in reasons.items()]
        if fresh:
            parts.append('initialised fresh (not in the checkpoint): ' + ', '.join(sorted(fresh)))
        logger.info(f'MILA: loaded {len(weights)} tensors from {path}. ' + ' | '.join(parts))
