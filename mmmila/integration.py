"""mmengine integration: every checkpoint load that goes through mmengine follows mmmila's policy.

``mmmila/__init__.py`` calls :func:`install` (idempotent), after which ``init_cfg`` Pretrained,
``load_from``, ``--resume``, ``init_detector``/``init_model`` and the inferencers:

- read files under the trust policy of :mod:`mmmila.checkpoint.reading` (mmengine's loaders for
  local paths and ``http(s)://`` are replaced); a Runner trusts the files under its own
  ``work_dir`` (the project's own runs) while it loads a checkpoint;
- convert a checkpoint in the authors' format, loaded into a model whose ``backbone`` is a
  ``MILA``, to mmmila's layout (``backbone.*``, ``head.fc.*``): by a Runner as it is read (its
  hooks see the converted ``state_dict``), elsewhere as it is loaded.

The top layer of the package: it may import everything below it (checkpoint, models).
"""
from __future__ import annotations

import contextvars
import functools
from collections import OrderedDict

from mmengine.logging import print_log
from mmengine.runner import checkpoint as mmengine_checkpoint
from mmengine.runner.checkpoint import CheckpointLoader

from mmmila.checkpoint.keys import authors_to_mmmila, backbone_weights, extract_state_dict, is_authors_format
from mmmila.checkpoint.reading import read_checkpoint, read_url, trusted_paths
from mmmila.models.backbones.mila import MILA

# The model of the Runner that is loading a checkpoint (see _runner_load_checkpoint).
_runner_model: contextvars.ContextVar = contextvars.ContextVar('mmmila_runner_model', default=None)


def load_from_local(filename: str, map_location=None):
    """mmengine's loader for local paths (scheme ``''``), with the policy."""
    return _for_runner_model(read_checkpoint(filename, map_location))


def load_from_url(url: str, map_location=None, model_dir: str | None = None):
    """mmengine's loader for ``http(s)://``: download once, then read under the policy."""
    return _for_runner_model(read_url(url, map_location, model_dir))


def convert_for_model(model, state_dict: dict) -> dict:
    """The authors' weights in mmmila's layout when ``model.backbone`` is a MILA.

    A classification backbone (``out_indices=(3,)``) gets ``backbone.*`` and ``head.fc.*``
    (:func:`~mmmila.checkpoint.keys.authors_to_mmmila`); a dense one gets ``backbone.*`` only, its
    ``norm0``-``norm3`` left fresh, as with ``init_cfg`` Pretrained. ``state_dict`` is what mmengine
    extracted from a checkpoint (its ``state_dict`` entry, else the whole dict); other checkpoints
    and models are returned unchanged.
    """
    from mmengine.model import is_model_wrapper

    target = model.module if is_model_wrapper(model) else model
    backbone = getattr(target, 'backbone', None)
    if not isinstance(backbone, MILA):
        return state_dict
    weights = extract_state_dict(state_dict)
    if not is_authors_format(weights):
        return state_dict
    if tuple(backbone.out_indices) == (3,):
        converted = authors_to_mmmila(weights)
        what = 'backbone.*/head.fc.* keys (RoPE tables dropped)'
    else:
        dense, ignored = backbone_weights(weights, backbone.out_indices)
        converted = OrderedDict(('backbone.' + k, v) for k, v in dense.items())
        what = f'backbone.* keys ({len(ignored)} of the head, final norm and RoPE tables dropped)'
    print_log(f"mmmila: the checkpoint is in the authors' format; converted its {len(weights)} "
              f'keys to {len(converted)} {what} for {type(target).__name__}', logger='current')
    return converted


def install() -> None:
    """Put the policy into mmengine (idempotent; ``import mmmila`` calls it)."""
    CheckpointLoader.register_scheme('', load_from_local, force=True)
    CheckpointLoader.register_scheme(('http://', 'https://'), load_from_url, force=True)
    _wrap(mmengine_checkpoint, 'load_state_dict', _converting_load_state_dict)
    from mmengine.runner import FlexibleRunner, Runner
    for runner_cls in (Runner, FlexibleRunner):
        _wrap(runner_cls, 'load_checkpoint', _runner_load_checkpoint)


def _wrap(owner, name: str, wrapper) -> None:
    original = getattr(owner, name)
    if getattr(original, '__mmmila_original__', None) is None:
        wrapped = wrapper(original)
        wrapped.__mmmila_original__ = original
        setattr(owner, name, wrapped)


def _converting_load_state_dict(load_state_dict):
    @functools.wraps(load_state_dict)
    def converting(module, state_dict, strict=False, logger=None):
        return load_state_dict(module, convert_for_model(module, state_dict), strict, logger)
    return converting


def _runner_load_checkpoint(load_checkpoint):
    @functools.wraps(load_checkpoint)
    def load(self, *args, **kwargs):
        token = _runner_model.set(self.model)
        try:
            with trusted_paths(self.work_dir):  # what this run's work_dir holds, the project's runs wrote
                return load_checkpoint(self, *args, **kwargs)
        finally:
            _runner_model.reset(token)
    return load


def _for_runner_model(ckpt):
    """A checkpoint in the authors' format read for a Runner's MILA model, already in mmmila's format.

    The Runner hands the checkpoint to hooks (e.g. an EMA hook reads ``checkpoint['state_dict']``)
    before loading it into the model, so the conversion happens here rather than at that load.
    """
    model = _runner_model.get()
    if model is None or not isinstance(ckpt, dict):
        return ckpt
    converted = convert_for_model(model, ckpt)
    return ckpt if converted is ckpt else {'state_dict': converted, 'meta': {'converted_from': 'authors'}}
