"""mmengine integration: every checkpoint load that goes through mmengine follows mmmila's policy.

``mmmila/__init__.py`` calls :func:`install` (idempotent), after which ``init_cfg`` Pretrained,
``load_from``, ``--resume``, ``init_detector``/``init_model`` and the inferencers:

- read files under the trust policy of :mod:`mmmila.checkpoint.reading`, whichever of mmengine's
  loaders reads them, through ``CheckpointLoader`` or called directly: the loaders for local paths
  and ``http(s)://`` are replaced; the download-and-load function of ``mmengine.runner.checkpoint``
  (``load_url``, which its ``http(s)://``, ``open-mmlab://``, ``torchvision://`` and ``mmcls://``
  loaders call, and which unpickles fully) and, on OneDL's mmengine, its ``_safe_torch_load`` (which
  its local, ``open-mmlab://``, ``s3://``, ``petrel://`` and ``pavi://`` loaders call, and which falls
  back to the full unpickler) are replaced by the policy's readers; OpenMMLab's mmengine 0.10.7
  calls ``torch.load`` itself in those loaders, weights-only by default since torch 2.6. A Runner
  trusts the files under its own ``work_dir`` (the project's own runs) while it loads a checkpoint;
- resolve ``mmseg::`` config paths on OneDL's stack too (:func:`resolve_config_scopes`);
- convert a checkpoint in the authors' format, loaded into a model whose ``backbone`` is a
  ``MILA``, to mmmila's layout (``backbone.*``, ``head.fc.*``): by a Runner as it is read (its
  hooks see the converted ``state_dict``), elsewhere as it is loaded.

The top layer of the package: it may import everything below it (checkpoint, models).
"""
from __future__ import annotations

import contextvars
import functools
import os
from collections import OrderedDict

from mmengine.logging import print_log
from mmengine.runner import checkpoint as mmengine_checkpoint
from mmengine.runner.checkpoint import CheckpointLoader

from mmmila.checkpoint.keys import authors_to_mmmila, backbone_weights, extract_state_dict, is_authors_format
from mmmila.checkpoint.reading import read_checkpoint, read_url, read_weights_only, trusted_paths
from mmmila.models.backbones.mila import MILA

# The model of the Runner that is loading a checkpoint (see _runner_load_checkpoint).
_runner_model: contextvars.ContextVar = contextvars.ContextVar('mmmila_runner_model', default=None)


def load_from_local(filename: str, map_location=None):
    """mmengine's loader for local paths (scheme ``''``), with the policy."""
    return _for_runner_model(read_checkpoint(filename, map_location))


def load_from_url(url: str, map_location=None, model_dir: str | None = None):
    """mmengine's loader for ``http(s)://``: download once, then read under the policy."""
    return _for_runner_model(read_url(url, map_location, model_dir))


def load_url(url: str, model_dir: str | None = None, map_location=None, progress: bool = True,
             check_hash: bool = False, file_name: str | None = None):
    """Stands in for ``mmengine.runner.checkpoint.load_url`` (torch's ``load_state_dict_from_url``,
    which unpickles fully): download once, then read under the policy. ``check_hash`` is not supported."""
    if check_hash:
        raise ValueError(f'mmmila: check_hash=True is not supported when loading {url}')
    return read_url(url, map_location, model_dir, file_name)


def safe_torch_load(file, map_location=None, weights_only=None):
    """Stands in for OneDL mmengine's ``_safe_torch_load``, which falls back to ``weights_only=False``:
    a local file is read under the policy (trusted files fully), a stream weights only."""
    if isinstance(file, (str, os.PathLike)) and not weights_only:
        return read_checkpoint(os.fspath(file), map_location)
    return read_weights_only(file, map_location)


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


def resolve_config_scopes() -> None:
    """Make ``scope::path`` config references resolve when the scope's distribution has another name.

    mmengine maps a config scope to the name of the distribution that ships its configs (its
    ``MODULE2PACKAGE``: ``mmseg`` -> ``mmsegmentation``) and looks that name up as a distribution,
    then as an importable module. OneDL's ``mmseg`` comes from the distribution
    ``onedl-mmsegmentation``, so both lookups fail and every config with an ``mmseg::`` base stops
    with ``ModuleNotFoundError: mmsegmentation is not installed`` (docs/install.md). Where that
    distribution is missing and the scope's module imports, the scope is mapped to the module
    itself, which both lookups find; mmengine's table is shared by its Config, registries and
    inferencers. Idempotent, and a no-op with OpenMMLab's packages.
    """
    import importlib.metadata
    import importlib.util

    from mmengine.config.utils import MODULE2PACKAGE

    for scope, distribution in list(MODULE2PACKAGE.items()):
        if distribution == scope:
            continue
        try:
            importlib.metadata.distribution(distribution)
            continue
        except importlib.metadata.PackageNotFoundError:
            pass
        try:
            importable = importlib.util.find_spec(scope) is not None
        except (ImportError, ValueError):  # a finder that refuses the module: not importable
            importable = False
        if importable:
            MODULE2PACKAGE[scope] = scope


def install() -> None:
    """Put the policy and the config-scope fix into mmengine (idempotent; ``import mmmila`` calls it)."""
    resolve_config_scopes()
    CheckpointLoader.register_scheme('', load_from_local, force=True)
    CheckpointLoader.register_scheme(('http://', 'https://'), load_from_url, force=True)
    # What mmengine's own loaders call, so that they follow the policy even when called directly.
    mmengine_checkpoint.load_url = load_url
    if hasattr(mmengine_checkpoint, '_safe_torch_load'):  # OneDL's mmengine (0.10.8 on)
        mmengine_checkpoint._safe_torch_load = safe_torch_load
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
