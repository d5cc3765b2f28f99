"""Writing a file so that a reader never sees part of it (docs/checkpoints.md).

:func:`atomic_write` writes the data to a temporary file beside the target (``<name>.<pid>.saving``),
flushes it to the disk (``fsync``), renames it over the target (``os.replace``, atomic on POSIX
file systems and on Windows) and flushes the folder, so that the rename itself survives a power
loss. A process killed, or a write that fails (a full disk), at any point leaves the target as it
was before: the old file or none, never a part of the new one. A write that fails removes its
temporary file; one left by a killed process carries the suffix :data:`PARTIAL_SUFFIX`.

:class:`AtomicLocalBackend` is mmengine's local file backend with ``put`` / ``put_text`` going
through :func:`atomic_write`; it is registered in mmengine's file backends as
:data:`ATOMIC_BACKEND` (``backend_args=dict(backend='mmmila_atomic_local')``).
"""
from __future__ import annotations

import os
import os.path as osp
from pathlib import Path

from mmengine.fileio import LocalBackend, register_backend

PARTIAL_SUFFIX = '.saving'
ATOMIC_BACKEND = 'mmmila_atomic_local'


def partial_name(path: str | Path) -> str:
    """The temporary name that :func:`atomic_write` gives the data of ``path`` in this process."""
    return f'{os.fspath(path)}.{os.getpid()}{PARTIAL_SUFFIX}'


def atomic_write(path: str | Path, data: bytes | str, encoding: str = 'utf-8') -> None:
    """Replace ``path`` by ``data`` (bytes, or text in ``encoding``) in one step.

    The folder is created if needed. On any error the temporary file is removed and the error
    raised; ``path`` is then unchanged.
    """
    path = os.fspath(path)
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode(encoding)
    partial = partial_name(path)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        if osp.lexists(partial):
            os.remove(partial)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose writes replace a file in one step (:func:`atomic_write`)."""

    def put(self, obj: bytes, filepath: str | Path) -> None:
        atomic_write(filepath, obj)

    def put_text(self, obj: str, filepath: str | Path, encoding: str = 'utf-8') -> None:
        atomic_write(filepath, obj, encoding)


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)
