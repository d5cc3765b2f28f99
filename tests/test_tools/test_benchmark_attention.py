"""tools/benchmark_attention.py runs end to end at a tiny size and checks its variants agree."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / 'tools' / 'benchmark_attention.py'


def run_tool(*args, check=True):
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True,
                          cwd=REPO, check=check, timeout=600)


def test_tiny_run_with_memory(tmp_path):
    """48x40 pixels -> a 10x12 stage-1 map (odd N = 120): times, memory and equality in the JSON."""
    out = tmp_path / 'bench.json'
    res = run_tool('--sizes', '48x40', '--rounds', '2', '--threads', '1', '--json', str(out))
    assert '| torch |' in res.stdout and '| authors |' in res.stdout
    report = json.loads(out.read_text())
    rows = {row['variant']: row for row in report['results']}
    assert set(rows) == {'authors', 'authors-dense', 'reference', 'torch'}
    for name, row in rows.items():
        assert (row['n'], row['channels'], row['heads']) == (120, 64, 2)
        assert row['rel_diff'] < 1e-5, name                     # same outputs and gradients
        assert row['fwd_ms'] > 0 and row['fwdbwd_ms'] > 0
        assert row['fwdbwd_peak_mb'] >= 0
    assert rows['authors']['fwd_speedup'] == pytest.approx(1.0)
    assert rows['authors']['fwdbwd_mem_ratio'] == pytest.approx(1.0)
    assert '1 threads' in report['machine'] and 'torch ' in report['machine']


def test_warm_heap_and_stages(tmp_path):
    out = tmp_path / 'bench.json'
    run_tool('--sizes', '64x64', '--stages', '1', '2', '--rounds', '1', '--no-memory', '--warm-heap',
             '--threads', '1', '--json', str(out))
    rows = json.loads(out.read_text())['results']
    assert {(r['stage'], r['n'], r['heads']) for r in rows} == {(1, 256, 2), (2, 64, 4)}
    assert all(r['rel_diff'] < 1e-5 for r in rows)


def test_bad_size_is_named():
    res = run_tool('--sizes', '1280by800', check=False)
    assert res.returncode == 2
    assert '1280by800' in res.stderr and 'WIDTHxHEIGHT' in res.stderr
