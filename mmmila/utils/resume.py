"""``--resume`` when a checkpoint cannot be read: choose the newest one that can, and keep the other.

A checkpoint that a crash, a full disk or a killed copy cut short fails deep inside ``torch.load``
with a traceback that names neither the file nor the intact checkpoints beside it. Here each
candidate is read once under the trust policy (:func:`mmmila.checkpoint.reading.read_checkpoint`,
the run's work_dir trusted as the Runner trusts it) before the Runner starts:

- plain ``--resume``: if the checkpoint that ``last_checkpoint`` names does not read, it is renamed
  ``<name>.unreadable``, ``last_checkpoint`` is pointed at the newest checkpoint of the work_dir
  that reads, and the run resumes from it (one line says so);
- ``--resume PATH`` that does not read stops with one line: the file, why, and the newest intact
  checkpoint of the work_dir.

An unreadable file inside the work_dir is renamed, never deleted, so that the resumed run, which
writes the same checkpoint names again, does not overwrite it.
"""
from __future__ import annotations

import os
import os.path as osp
import re

from mmmila.checkpoint.reading import UntrustedCheckpointError, read_checkpoint, trusted_paths
from mmmila.engine.files import atomic_write
from mmmila.engine.hooks import last_checkpoint

from .run_setup import LaunchError

UNREADABLE_SUFFIX = '.unreadable'
_CHECKPOINT_NAME = re.compile(r'^(?:epoch|iter)_(\d+)\.pth$')


def unreadable_reason(path: str, work_dir: str) -> str | None:
    """Why ``path`` cannot be read as a checkpoint (None if it reads).

    A file that reads but needs trust that it lacks counts as readable here: loading it stops
    later with the trust policy's own message.
    """
    if not osp.isfile(path):
        return 'it does not exist'
    try:
        with trusted_paths(work_dir):
            read_checkpoint(path, map_location='cpu')
    except UntrustedCheckpointError:
        return None
    except Exception as err:  # noqa: BLE001 -- any failure to read is the answer
        lines = [line for line in str(err).strip().splitlines() if line.strip()]
        first = lines[0].strip().split('. ')[0] if lines else ''   # torch's first sentence is the reason
        detail = f'{type(err).__name__}: {first}' if first else type(err).__name__
        return f'truncated or corrupt, {detail}'
    return None


def checkpoints_newest_first(work_dir: str) -> list[str]:
    """The work_dir's ``epoch_N.pth`` / ``iter_N.pth`` files, highest N first (then newest file)."""
    found = []
    for name in os.listdir(work_dir) if osp.isdir(work_dir) else []:
        match = _CHECKPOINT_NAME.match(name)
        path = osp.join(work_dir, name)
        if match and osp.isfile(path):
            found.append((int(match.group(1)), osp.getmtime(path), path))
    return [path for _, _, path in sorted(found, reverse=True)]


def newest_intact(work_dir: str, skip: tuple[str, ...] = ()) -> str | None:
    """The newest checkpoint of ``work_dir`` that reads, or None."""
    skipped = {osp.realpath(p) for p in skip}
    for path in checkpoints_newest_first(work_dir):
        if osp.realpath(path) not in skipped and unreadable_reason(path, work_dir) is None:
            return path
    return None


def set_aside(path: str, work_dir: str) -> str | None:
    """Rename an unreadable file of the work_dir to ``<name>.unreadable`` (``.unreadable.2``, ... if
    taken); returns the new name, or None for a file outside the work_dir or one that is missing."""
    inside = osp.realpath(path).startswith(osp.realpath(work_dir).rstrip(os.sep) + os.sep)
    if not inside or not osp.isfile(path):
        return None
    target, n = path + UNREADABLE_SUFFIX, 1
    while osp.lexists(target):
        n += 1
        target = f'{path}{UNREADABLE_SUFFIX}.{n}'
    os.replace(path, target)
    return target


def choose_resume_checkpoint(work_dir: str, resume: str) -> tuple[str | None, str | None]:
    """The checkpoint ``--resume`` continues from, after checking that it reads.

    Args:
        work_dir (str): the run's work_dir.
        resume (str): 'auto' (plain ``--resume``: the file ``last_checkpoint`` names) or a path.

    Returns:
        tuple: ``(checkpoint, note)``. ``checkpoint`` is None when plain ``--resume`` finds no
        ``last_checkpoint`` (the run starts from the beginning, as mmengine's does); ``note`` is
        the line to show when another checkpoint than the newest was chosen, else None.

    Raises:
        LaunchError: the named checkpoint does not read, or none of the work_dir reads.
    """
    if resume != 'auto':
        reason = unreadable_reason(resume, work_dir)
        if reason is None:
            return resume, None
        moved = set_aside(resume, work_dir)
        intact = newest_intact(work_dir, skip=(resume,))
        raise LaunchError(
            f'--resume {resume} cannot be read ({reason})' + (f'; kept as {moved}' if moved else '')
            + (f'; the newest intact checkpoint in {work_dir} is {intact}' if intact
               else f'; no checkpoint in {work_dir} reads'))
    newest = last_checkpoint(work_dir)
    if newest is None:
        return None, None
    reason = unreadable_reason(newest, work_dir)
    if reason is None:
        return newest, None
    moved = set_aside(newest, work_dir)
    intact = newest_intact(work_dir, skip=(newest,))
    kept = f'; kept as {moved}' if moved else ''
    if intact is None:
        raise LaunchError(f'--resume: the latest checkpoint {newest} cannot be read ({reason}){kept}, and '
                          f'no other checkpoint in {work_dir} reads: nothing to resume from')
    # last_checkpoint names the file that is resumed from (and, for the processes of a torchrun job
    # started after this check, the file they resume from).
    atomic_write(osp.join(work_dir, 'last_checkpoint'), intact)
    return intact, (f'the latest checkpoint {newest} cannot be read ({reason}){kept}; resuming from '
                    f'{intact}, the newest checkpoint in {work_dir} that reads')
