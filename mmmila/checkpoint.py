"""How mmmila reads checkpoint files: weights only, unless the file is trusted (docs/checkpoints.md).

``import mmmila`` calls :func:`install`, which makes every checkpoint load that goes through
mmengine (``init_cfg`` Pretrained, ``load_from``, ``--resume``, ``init_detector``/``init_model``,
the inferencers) follow one policy:

- Every file is first read with ``torch.load(weights_only=True)``, plus a short allow-list of
  data-only types (numpy arrays and scalars, mmengine's ``HistoryBuffer`` with its own statistics
  methods, a yacs ``CfgNode`` rebuilt as a plain ``OrderedDict``), added to torch's allow-list at
  the first load. If an untrusted file needs more, loading stops with
  :class:`UntrustedCheckpointError`; nothing of the file's own code has run.
- A trusted file that needs more is then unpickled fully. Trusted are the files under the ``work_dir`` of the
  mmengine Runner that loads them (the project's own runs), the paths named in the environment
  variable ``MMMILA_TRUSTED_CHECKPOINTS`` and those passed to :func:`trusted_paths`.
- A checkpoint in the authors' released format loaded by mmengine into a model whose ``backbone``
  is a ``MILA`` is converted on the fly to mmmila's layout (``backbone.*``, ``head.fc.*``): by a
  Runner as it is read (its hooks see the converted ``state_dict``), elsewhere as it is loaded.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import os.path as osp
import pickle
from collections import OrderedDict
from collections.abc import Iterator
from urllib.parse import urlparse

import torch
from mmengine.logging import print_log
from mmengine.runner import checkpoint as mmengine_checkpoint
from mmengine.runner.checkpoint import CheckpointLoader

TRUST_ENV = 'MMMILA_TRUSTED_CHECKPOINTS'
# The statistics methods that mmengine's HistoryBuffer pickles as ``getattr(HistoryBuffer, name)``.
_HISTORY_STATISTICS = frozenset({'min', 'max', 'current', 'mean'})
_run_roots: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar('mmmila_trusted', default=())
# The model of the Runner that is loading a checkpoint (see _runner_load_checkpoint).
_runner_model: contextvars.ContextVar = contextvars.ContextVar('mmmila_runner_model', default=None)


class UntrustedCheckpointError(pickle.UnpicklingError, RuntimeError):
    """A checkpoint needs the full unpickler (it could run code) and is not trusted."""


@contextlib.contextmanager
def trusted_paths(*paths: str) -> Iterator[None]:
    """Trust these files, or every file under these directories, inside the ``with`` block."""
    token = _run_roots.set(_run_roots.get() + tuple(_real(p) for p in paths))
    try:
        yield
    finally:
        _run_roots.reset(token)


def trust_reason(filename: str) -> str | None:
    """Why ``filename`` is trusted (``None`` if it is not): which trusted file or folder covers it."""
    path = _real(filename)
    env = [e for e in os.environ.get(TRUST_ENV, '').split(os.pathsep) if e.strip()]
    sources = [(root, 'trusted in this run') for root in _run_roots.get()]
    sources += [(_real(entry), f'named in {TRUST_ENV}') for entry in env]
    for root, why in sources:
        if path == root or (osp.isdir(root) and path.startswith(root.rstrip(os.sep) + os.sep)):
            return f'{why} ({root})'
    return None


def load_checkpoint_file(path: str, map_location: str = 'cpu') -> dict:
    """Read a checkpoint file (local path or URL) into a dict, following the trust policy.

    Args:
        path (str): a local file, or any URL mmengine's ``CheckpointLoader`` knows.
        map_location (str): where tensors go, as in ``torch.load``. Defaults to 'cpu'.

    Raises:
        UntrustedCheckpointError: the file needs the full unpickler and is not trusted.
        ValueError: the file does not hold a dict.
    """
    ckpt = CheckpointLoader.load_checkpoint(path, map_location=map_location)
    if not isinstance(ckpt, dict):
        raise ValueError(f'checkpoint {path} holds a {type(ckpt).__name__}, not a dict of weights')
    return ckpt


def read_checkpoint(filename: str, map_location=None, source: str | None = None):
    """``torch.load`` a local file under the policy.

    Weights-only first (with the data-only types); the full unpickler only if that fails and the
    file is trusted.

    Args:
        filename (str): the local file.
        map_location: as in ``torch.load``. Defaults to None.
        source (str | None): how messages name the file (e.g. its URL). Defaults to ``filename``.

    Raises:
        UntrustedCheckpointError: the file needs the full unpickler and is not trusted.
    """
    filename = osp.expanduser(filename)
    source = source or filename
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    _allow_data_only_types()
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        reason = _unpickling_reason(err)
    why = trust_reason(filename)
    if why is None:
        raise UntrustedCheckpointError(
            f'Refusing to fully unpickle the untrusted checkpoint {source}: it holds more than tensors '
            f'and plain data ({reason}), and unpickling that can run code; if you trust this file, name '
            f'its path in the environment variable {TRUST_ENV} (see docs/checkpoints.md), for example to '
            'convert it once with tools/convert_checkpoint.py.') from None
    print_log(f'mmmila: {source} holds pickled objects ({reason}); unpickling it fully, as it is '
              f'trusted: {why}', logger='current')
    return torch.load(filename, map_location=map_location, weights_only=False)


def load_from_local(filename: str, map_location=None):
    """mmengine's loader for local paths (scheme ``''``), with the policy."""
    return _for_runner_model(read_checkpoint(filename, map_location))


def load_from_url(url: str, map_location=None, model_dir: str | None = None):
    """mmengine's loader for ``http(s)://`` (any URL urllib opens): download once, then read safely.

    The file is cached where mmengine caches downloads (``$TORCH_HOME/checkpoints``) and is read
    under the policy; to trust a downloaded file, name its cached path.
    """
    from mmengine.dist import barrier, get_dist_info
    from torch.hub import _get_torch_home, download_url_to_file  # the same cache mmengine uses

    model_dir = model_dir or osp.join(_get_torch_home(), 'checkpoints')
    cached = osp.join(model_dir, osp.basename(urlparse(url).path))
    rank, world_size = get_dist_info()
    if rank == 0 and not osp.exists(cached):
        os.makedirs(model_dir, exist_ok=True)
        download_url_to_file(url, cached, progress=False)
    if world_size > 1:
        barrier()  # rank 0 downloads first; the others find the file unless they have their own disk
        if rank > 0 and not osp.exists(cached):
            os.makedirs(model_dir, exist_ok=True)
            download_url_to_file(url, cached, progress=False)
    return _for_runner_model(read_checkpoint(cached, map_location, source=f'{url} (downloaded to {cached})'))


def convert_released_for(model, state_dict: dict) -> dict:
    """The authors' released weights in mmmila's layout when ``model.backbone`` is a MILA.

    A classification backbone (``out_indices=(3,)``) gets ``backbone.*`` and ``head.fc.*``
    (:func:`~mmmila.converters.official_to_mmmila`); a dense one gets ``backbone.*`` only, its
    ``norm0``-``norm3`` left fresh, as with ``init_cfg`` Pretrained. ``state_dict`` is what mmengine
    extracted from a checkpoint (its ``state_dict`` entry, else the whole dict); other checkpoints
    and models are returned unchanged.
    """
    from mmengine.model import is_model_wrapper

    from mmmila.converters import extract_state_dict, is_official, official_to_mmmila
    from mmmila.converters.loading import backbone_state_dict_from
    from mmmila.models import MILA

    target = model.module if is_model_wrapper(model) else model
    backbone = getattr(target, 'backbone', None)
    if not isinstance(backbone, MILA):
        return state_dict
    weights = extract_state_dict(state_dict)
    if not is_official(weights):
        return state_dict
    if tuple(backbone.out_indices) == (3,):
        converted = official_to_mmmila(weights)
        what = 'backbone.*/head.fc.* keys (RoPE tables dropped)'
    else:
        dense, ignored = backbone_state_dict_from(weights, backbone.out_indices)
        converted = OrderedDict(('backbone.' + k, v) for k, v in dense.items())
        what = f'backbone.* keys ({len(ignored)} of the head, final norm and RoPE tables dropped)'
    print_log(f"mmmila: the checkpoint is in the authors' released format; converted its {len(weights)} "
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
        return load_state_dict(module, convert_released_for(module, state_dict), strict, logger)
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
    """A released checkpoint read for a Runner's MILA model, already in mmmila's format.

    The Runner hands the checkpoint to hooks (e.g. an EMA hook reads ``checkpoint['state_dict']``)
    before loading it into the model, so the conversion happens here rather than at that load.
    """
    model = _runner_model.get()
    if model is None or not isinstance(ckpt, dict):
        return ckpt
    converted = convert_released_for(model, ckpt)
    return ckpt if converted is ckpt else {'state_dict': converted, 'meta': {'converted_from': 'released'}}


def _real(path: str) -> str:
    return osp.realpath(osp.expanduser(str(path)))


def _unpickling_reason(err: Exception) -> str:
    """The part of torch's weights-only error that says what was refused."""
    text = str(err)
    detail = text.partition('WeightsUnpickler error:')[2].strip() or text.strip()
    detail = detail.split('\n\n')[0].split(' was not an allowed global')[0]
    return detail.replace('Unsupported global: GLOBAL ', 'a reference to ').strip()[:200]


def _statistics_method(owner, name: str):
    """Stands in for ``builtins.getattr`` in a weights-only load: HistoryBuffer's statistics only."""
    from mmengine.logging.history_buffer import HistoryBuffer

    if owner is HistoryBuffer and name in _HISTORY_STATISTICS and callable(vars(HistoryBuffer).get(name)):
        return vars(HistoryBuffer)[name]
    raise pickle.UnpicklingError(f'getattr({getattr(owner, "__name__", type(owner).__name__)}, {name!r})')


class _ConfigAsDict:
    """Stands in for a pickled yacs ``CfgNode``: it is rebuilt as an ``OrderedDict``, no yacs code runs."""

    def __new__(cls, *args):
        return OrderedDict()


@functools.lru_cache(maxsize=1)
def _allow_data_only_types() -> None:
    """Add the data-only types to torch's weights-only allow-list (once, at the first load)."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer

    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    dtype_classes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith('DType')]
    allowed = [np.ndarray, np.dtype, *dtype_classes, HistoryBuffer, (_statistics_method, 'builtins.getattr'),
               (_ConfigAsDict, 'yacs.config.CfgNode')]
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):  # numpy 1.x and 2.x files
        allowed += [(multiarray._reconstruct, f'{module}._reconstruct'),
                    (multiarray.scalar, f'{module}.scalar')]
    torch.serialization.add_safe_globals(allowed)


install()  # the policy is active whenever mmmila is imported (cheap and idempotent)
