"""The command line a report records: as a user types it at the repository's root.

A report must say how to reproduce it on any checkout, and must not carry the folders of the
machine it ran on. :func:`command_line` writes the program relative to the repository
(``python tools/benchmark.py ...``), every argument that is a path inside the repository relative
to it, and a path outside the repository (an output folder in /tmp, say) as ``.../NAME``: its last
part only, since where a run wrote on its machine is nobody else's business. Other arguments are
kept as typed; an argument with a space is quoted as a shell needs it.
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Sequence


def _portable(arg: str, repo: Path, cwd: Path) -> str:
    """``arg`` with a path in it made relative to ``repo`` (or elided when outside it)."""
    if arg.startswith('--') and '=' in arg:                       # --out=/abs/dir
        flag, _, value = arg.partition('=')
        return f'{flag}={_portable(value, repo, cwd)}'
    path = Path(arg)
    if not path.is_absolute():
        if cwd == repo or not (cwd / path).exists():
            return arg                                            # as typed at the repository's root
        path = cwd / path
    path = Path(os.path.realpath(path))
    try:
        return path.relative_to(repo).as_posix() or '.'
    except ValueError:
        return f'.../{path.name}' if path.name else '...'


def command_line(program: str | Path, args: Sequence[str], repo: Path, cwd: Path | None = None,
                 interpreter: str = 'python') -> str:
    """``interpreter program args`` as typed at the root of ``repo``.

    Args:
        program: the script as it was run (``sys.argv[0]``: absolute, or relative to ``cwd``).
        args: its arguments (``sys.argv[1:]``).
        repo: the repository's root.
        cwd: the folder the command ran in (default: the current one), against which relative
            arguments that name existing paths are read.
    """
    repo = Path(os.path.realpath(repo))
    cwd = Path(os.path.realpath(cwd or os.getcwd()))
    words = [interpreter, _portable(str(cwd / program), repo, cwd)]
    words += [_portable(str(a), repo, cwd) for a in args]
    return ' '.join(shlex.quote(w) for w in words)
