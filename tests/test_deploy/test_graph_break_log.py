"""The reading of dynamo's graph-break log that the compiled-Runner tests use (tests/test_deploy/helpers.py)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from .helpers import graph_break_files, project_files

PREFIX = 'V1206 07:37:34.610000 13516 torch/_dynamo/symbolic_convert.py:5124] [0/0] [__graph_breaks] '


def test_graph_break_files_reads_where_the_graph_broke_not_the_outermost_frame():
    lines = ['Graph break in user code at /venv/site-packages/mmseg/models/losses/accuracy.py:49',
             'Graph Break Reason: Encountered graph break when attempting to trace CALL',
             'User code traceback:',
             '  File "/home/u/mmmila/tools/train.py", line 120, in <module>',
             '  File "/venv/site-packages/mmseg/models/losses/accuracy.py", line 49, in accuracy',
             'Graph break (user stack suppressed due to duplicate graph break) in user code at /x/a.py:3']
    log = '\n'.join(PREFIX + line for line in lines)
    log += ('\nW1206 torch/_dynamo/variables/tensor.py:1759] [3/0] Graph break: from user code at:\n'
            'W1206 torch/_dynamo/variables/tensor.py:1759] [3/0]   File "/x/b.py", line 6, in forward\n')
    assert graph_break_files(log) == {'/venv/site-packages/mmseg/models/losses/accuracy.py', '/x/a.py', '/x/b.py'}


def test_project_files_are_those_under_the_installed_package_whatever_the_checkout_is_named(tmp_path):
    package = Path(importlib.util.find_spec('mmmila').origin).parent
    kernels = Path(importlib.util.find_spec('mmmila.kernels').origin).parent
    ours = [str(package / 'models' / 'layers' / 'attention.py'), str(kernels / 'common.py')]
    # a checkout named mmmila with its virtual environment inside: the libraries' files are not ours
    theirs = [str(package.parent / '.venv' / 'lib' / 'python3.11' / 'site-packages' / 'mmseg' / 'x.py'),
              str(package.parent / 'tools' / 'train.py'), str(tmp_path / 'mmmila' / 'mmmila' / 'y.py')]
    assert project_files(ours + theirs) == sorted(ours)
