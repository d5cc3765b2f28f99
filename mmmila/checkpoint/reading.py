"""Reading a checkpoint file safely: weights only, unless the file is trusted (docs/checkpoints.md).

- Every file is first read with ``torch.load(weights_only=True)``, plus a short allow-list of
  data-only types (numpy arrays and scalars, mmengine's ``HistoryBuffer`` with its own statistics
  methods, a yacs ``CfgNode`` rebuilt as a plain ``OrderedDict``), added to torch's allow-list at
  the first load. If an untrusted file needs more, reading stops with
  :class:`UntrustedCheckpointError`; nothing of the file's own code has run.
- A trusted file that needs more is then unpickled fully. Trusted are the paths named in the
  environment variable ``MMMILA_TRUSTED_CHECKPOINTS`` and those passed to :func:`trusted_paths`
  (an mmengine Runner trusts its own ``work_dir`` this way: ``mmmila/integration.py``).

Needs only torch and mmengine; knows nothing of models.
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
from mmengine.runner.checkpoint import CheckpointLoader

TRUST_ENV = 'MMMILA_TRUSTED_CHECKPOINTS'
# The statistics methods that mmengine's HistoryBuffer pickles as ``getattr(HistoryBuffer, name)``.
_HISTORY_STATISTICS = frozenset({'min', 'max', 'current', 'mean'})
_run_roots: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar('mmmila_trusted', default=())


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
    text = str(path)
    if '://' not in text:
        ckpt = read_checkpoint(text, map_location)
    elif text.startswith(('http://', 'https://')):
        ckpt = read_url(text, map_location)
    else:  # mmengine's other schemes (open-mmlab://, s3://, ...), as mmengine reads them
        ckpt = CheckpointLoader.load_checkpoint(text, map_location=map_location)
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
        raise _refusal(source, reason, f'if you trust this file, name its path in the environment variable '
                                       f'{TRUST_ENV} (see docs/checkpoints.md), for example to convert it once '
                                       'with tools/convert_checkpoint.py') from None
    print_log(f'mmmila: {source} holds pickled objects ({reason}); unpickling it fully, as it is '
              f'trusted: {why}', logger='current')
    return torch.load(filename, map_location=map_location, weights_only=False)


def read_weights_only(file, map_location=None, source: str | None = None):
    """``torch.load`` a file or an open stream (e.g. bytes read from a storage backend), weights only.

    With the data-only types, as :func:`read_checkpoint`; there is no path to trust, so a checkpoint
    that needs the full unpickler is refused.

    Raises:
        UntrustedCheckpointError: the checkpoint needs the full unpickler.
    """
    _allow_data_only_types()
    try:
        return torch.load(file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        reason = _unpickling_reason(err)
    raise _refusal(source or (file if isinstance(file, str) else 'read from a stream'), reason,
                   f'if you trust it, save it to a local file and name that path in the environment '
                   f'variable {TRUST_ENV} (see docs/checkpoints.md)') from None


def read_url(url: str, map_location=None, model_dir: str | None = None, file_name: str | None = None):
    """Download ``http(s)://`` (any URL urllib opens) once, then read the file under the policy.

    The file is cached where mmengine caches downloads (``$TORCH_HOME/checkpoints``), under the URL's
    file name or ``file_name``; to trust a downloaded file, name its cached path.
    """
    from mmengine.dist import barrier, get_dist_info
    from torch.hub import _get_torch_home, download_url_to_file  # the same cache mmengine uses

    model_dir = model_dir or osp.join(_get_torch_home(), 'checkpoints')
    cached = osp.join(model_dir, file_name or osp.basename(urlparse(url).path))
    rank, world_size = get_dist_info()
    if rank == 0 and not osp.exists(cached):
        os.makedirs(model_dir, exist_ok=True)
        download_url_to_file(url, cached, progress=False)
    if world_size > 1:
        barrier()  # rank 0 downloads first; the others find the file unless they have their own disk
        if rank > 0 and not osp.exists(cached):
            os.makedirs(model_dir, exist_ok=True)
            download_url_to_file(url, cached, progress=False)
    return read_checkpoint(cached, map_location, source=f'{url} (downloaded to {cached})')


def _refusal(source: str, reason: str, advice: str) -> UntrustedCheckpointError:
    return UntrustedCheckpointError(
        f'Refusing to fully unpickle the untrusted checkpoint {source}: it holds more than tensors and '
        f'plain data ({reason}), and unpickling that can run code; {advice}.')


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
