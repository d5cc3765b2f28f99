"""The kernels compile for real GPUs (PTX + ptxas, no GPU needed) without register spills.

The interpreter does not enforce the compiler's rules (e.g. kernels may read only constexpr
globals), so a kernel can pass every interpreter test and still fail to compile on a GPU.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name('compile_check.py')


def _compile(arch: int, dtypes: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    res = subprocess.run([sys.executable, str(SCRIPT), '--arch', str(arch), '--dtypes', dtypes],
                         capture_output=True, text=True, env=env, timeout=900)
    if 'no NVIDIA backend' in res.stderr:
        pytest.skip('this triton build has no NVIDIA backend')
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def _check(report: dict, expected: int) -> None:
    assert len(report) == expected
    spilled = {k: v for k, v in report.items() if v['spill_bytes'] > 16}
    assert not spilled, f'register spills: {spilled}'


def test_compiles_for_sm80_bf16():
    _check(_compile(80, 'bf16'), 4)


@pytest.mark.slow
@pytest.mark.parametrize('arch', [80, 90])
def test_compiles_all_dtypes(arch):
    _check(_compile(arch, 'fp32,bf16,fp16'), 12)
