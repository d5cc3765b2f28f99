"""The GPU validation kit (tools/gpu_check.py) in its dry run: CPU, Triton interpreter, tiny sizes.

The kit's dry run goes through the code of a GPU run (staging, every correctness check, the timing
loops, JSON + markdown, the final table). It runs here as on the GPU image: in a subprocess where
mmcv, mmdet, mmseg, mmpretrain, OpenCV, matplotlib and timm cannot be imported.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ..conftest import seed_for

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / 'tools' / 'gpu_check.py'
# Not on the GPU image (timm is, but the dry run must pass without it).
BLOCKED = ('mmcv', 'mmdet', 'mmseg', 'mmpretrain', 'cv2', 'matplotlib', 'timm')

CHILD = r'''
import importlib.abc, json, runpy, sys
BLOCKED = set(sys.argv[1].split(','))
TOOL = sys.argv[2]


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ImportError(f'{name} is blocked: the GPU image does not have it')
        return None


sys.meta_path.insert(0, Block())
sys.argv = [TOOL] + sys.argv[3:]
try:
    runpy.run_path(TOOL, run_name='__main__')
    code = 0
except SystemExit as exc:
    code = exc.code
loaded = sorted(m for m, mod in sys.modules.items()
                if m.split('.')[0] in BLOCKED and type(mod).__name__ != 'Placeholder')
print('BLOCKED-LOADED ' + json.dumps(loaded))
tops = {m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names) - set(sys.builtin_module_names)
print('THIRD-PARTY ' + json.dumps(sorted(t for t in tops if not t.startswith('_'))))
sys.exit(code)
'''


# What the GPU image has besides the wheels: torch with its runtime dependencies (tqdm: optional in
# torch.hub), triton, numpy; cython_runtime is made by compiled modules (PyYAML); cv2 is the kit's
# placeholder.
IMAGE_MODULES = {'torch', 'torchgen', 'functorch', 'triton', 'numpy', 'sympy', 'mpmath', 'typing_extensions', 'networkx',
                 'jinja2', 'markupsafe', 'filelock', 'fsspec', 'tqdm', 'cython_runtime', 'mmmila', 'cv2'}
# Modules of each wheel that tools/prepare_gpu_wheels.sh downloads.
WHEEL_MODULES = {'mmengine': {'mmengine'}, 'addict': {'addict'}, 'termcolor': {'termcolor'},
                 'yapf': {'yapf', 'yapf_third_party'}, 'platformdirs': {'platformdirs'}, 'rich': {'rich'},
                 'markdown-it-py': {'markdown_it'}, 'mdurl': {'mdurl'}, 'pygments': {'pygments'},
                 'pyyaml': {'yaml', '_yaml'}, 'packaging': {'packaging'}}


def prepared_wheels() -> list[str]:
    """Distribution names of the WHEELS list in tools/prepare_gpu_wheels.sh."""
    text = (REPO / 'tools' / 'prepare_gpu_wheels.sh').read_text()
    block = text.split('WHEELS=(', 1)[1].split(')', 1)[0]
    return [line.strip().split('==')[0] for line in block.splitlines() if line.strip()]


def run_kit(*args, blocked=BLOCKED, timeout=900):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, '-c', CHILD, ','.join(blocked), str(TOOL), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout)


def make_wheel(folder: Path, dist: str, module: str) -> Path:
    path = folder / f'{dist}-1.0-py3-none-any.whl'
    with zipfile.ZipFile(path, 'w') as zf:
        zf.writestr(f'{module}/__init__.py', 'VALUE = 1\n')
        zf.writestr(f'{dist}-1.0.dist-info/METADATA', f'Name: {dist}\nVersion: 1.0\n')
    return path


@pytest.fixture(scope='module')
def dry_run(tmp_path_factory):
    """One full dry run; two fake wheels: one whose module is missing, one whose module imports."""
    tmp = tmp_path_factory.mktemp('gpu_check')
    wheels = tmp / 'wheels'
    wheels.mkdir()
    make_wheel(wheels, 'mmmila_kit_probe', 'mmmila_kit_probe')
    make_wheel(wheels, 'fake_json', 'json')
    out = tmp / 'out'
    # The budget only stops a run early; on 2 loaded cores the interpreter's dry run takes ~5 min
    # since the depthwise-conv kernels run in it too, over the default 300 s.
    res = run_kit('--dry-run', '--out', out, '--wheels', wheels, '--seed', seed_for(7), '--budget-s', 1200)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res, json.loads((out / 'gpu_check.json').read_text()), out


def test_dry_run_needs_no_openmmlab_library(dry_run):
    res, report, out = dry_run
    loaded = json.loads(res.stdout.split('BLOCKED-LOADED ')[-1].splitlines()[0])
    assert loaded == []
    staging = report['sections']['env']['staging']
    assert staging['staged'] == ['mmmila_kit_probe-1.0-py3-none-any.whl']
    assert staging['present'] == ['fake_json-1.0-py3-none-any.whl']
    assert staging['placeholders'] == ['cv2']       # mmengine.runner imports it; blocked here
    assert report['dry_run'] is True and report['seed'] == seed_for(7)
    assert report['sections']['env']['triton_interpreter'] is True
    assert report['sections']['env']['copy_gb_s'] > 0
    assert 'torch ' in report['sections']['env']['machine']
    assert f"device copy {report['sections']['env']['copy_gb_s']:.1f} GB/s" in res.stdout


def test_prepared_wheels_cover_the_imports(dry_run):
    """Every third-party module the dry run imported is on the image or in a prepared wheel."""
    res, _, _ = dry_run
    loaded = set(json.loads(res.stdout.split('THIRD-PARTY ')[-1].splitlines()[0]))
    wheels = prepared_wheels()
    assert 'mmengine' in wheels and set(wheels) == set(WHEEL_MODULES)
    from_wheels = set().union(*WHEEL_MODULES.values())
    assert loaded - IMAGE_MODULES - from_wheels == set()
    # yapf too with OpenMMLab's mmengine, which imports it with its config module; OneDL's imports it
    # only to format a config's text.
    assert {'mmengine', 'yaml', 'rich', 'addict', 'termcolor', 'packaging'} <= loaded


def test_dry_run_correctness_rows(dry_run):
    _, report, _ = dry_run
    op = report['sections']['op_correctness']
    assert op['status'] == 'ok'
    assert {r['dtype'] for r in op['rows']} == {'float32', 'bfloat16', 'float16'}
    assert {r['channels'] for r in op['rows']} == {64, 96}
    for row in op['rows']:
        assert row['batch'] == 2 and row['hw'][0] != row['hw'][1]
        for name in ('out', 'dqk', 'dv'):
            assert math.isfinite(row[name]) and 0 < row[name] <= row['limit'], row
        assert row['ok'] and not row['nan']
    assert max(r['out'] for r in op['rows'] if r['dtype'] == 'float32') < 1e-4
    bb = report['sections']['backbone_correctness']
    assert bb['status'] == 'ok'
    assert [r['precision'] for r in bb['rows']] == ['float32', 'bf16-autocast']
    for row in bb['rows']:
        assert row['triton_calls'] == row['torch_calls'] == 4        # one block per stage
        assert 0 < row['outputs'] <= row['output_limit'] and row['worst_param_grad'] <= row['limit']
        assert row['params'] > 100 and row['missing_grads'] == []
        # both paths are measured against the float64 run, so the PyTorch path has an error too; the
        # limit shown is that of the same output
        assert 0 < row['torch_path_outputs'] and row['output_limit'] == pytest.approx(
            2 * row['torch_path_outputs'] + {'float32': 1e-4, 'bf16-autocast': 1e-3}[row['precision']])
    # on the same draw, float32 is far closer to float64 than bf16 autocast is
    assert 100 * bb['rows'][0]['outputs'] < bb['rows'][1]['outputs']
    assert report['sections']['compile']['status'] in ('ok', 'skipped')


def test_dry_run_speed_rows_and_files(dry_run):
    res, report, out = dry_run
    speed = report['sections']['op_speed']['rows']
    combos = {(r['map'], r['dtype'], r['mode'], r['variant']) for r in speed}
    assert len(combos) == len(speed) == 2 * 2 * 2 * 3
    for variant in ('triton', 'torch', 'authors'):
        for mode in ('fwd', 'fwd+bwd'):
            assert ('8x8', 'bfloat16', mode, variant) in combos
    assert all(r['ms'] > 0 and r['gb_s'] > 0 and r['speedup_vs_authors'] > 0 for r in speed)
    authors = [r for r in speed if r['variant'] == 'authors']
    assert all(r['speedup_vs_authors'] == pytest.approx(1.0) for r in authors)
    # bytes of the fused kernels: 4 C elements per token forward, 11 C forward+backward
    row = next(r for r in speed if r['map'] == '8x8' and r['dtype'] == 'bfloat16' and r['mode'] == 'fwd+bwd')
    assert row['bytes'] == 11 * 64 * 64 * 2
    for section in ('backbone_speed', 'sweep'):
        rows = report['sections'][section]['rows']
        assert report['sections'][section]['status'] == 'ok'
        assert {(r['model'], r['mode']) for r in rows} == {
            (m, mode) for m in ('MILA-T (Triton)', 'MILA-T (PyTorch path)')
            for mode in ('forward', 'train step')}
        assert all(r['ms'] > 0 for r in rows)
        assert 'timm is not importable' in report['sections'][section]['note']
    compiled = report['sections']['compiled_speed']
    assert compiled['status'] == 'ok', compiled
    assert {(r['model'], r['mode']) for r in compiled['rows']} == {
        ('MILA-T (Triton)', 'forward'), ('MILA-T (Triton)', 'train step')}
    for row in compiled['rows']:
        assert row['backend'] == 'eager' and row['eager_ms'] > 0 and row['compiled_ms'] > 0
        assert row['compiled_speedup'] == pytest.approx(row['eager_ms'] / row['compiled_ms'])
        assert row['compiled_first_call_s'] > 0
    profile = report['sections']['profile']
    assert profile['status'] == 'ok' and 0 < len(profile['rows']) <= 25
    assert profile['timed_ms_per_step'] > 0 and profile['wall_ms_per_step'] > 0
    ops = [r['op'] for r in profile['rows']]
    assert any('linear_attention_triton' in op for op in ops), ops   # the training step ran the Triton op
    assert all(r['calls_per_step'] > 0 for r in profile['rows'])
    mila = next(m for m in profile['models'] if m['model'] == 'MILA-T (Triton)')   # timm: absent on CPU
    assert mila['counted_launches'] > mila['triton_launches'] > 0 and mila['wall_ms'] > 0
    md = (out / 'gpu_check.md').read_text()
    assert '## op_correctness: ok' in md and '| MILA-T (Triton) |' in md
    assert (out / 'gpu_check.log').read_text().count('gpu_check: [') >= 18
    summary = res.stdout.split('BLOCKED-LOADED')[0].strip().splitlines()
    assert summary[-len(report['summary']) - 2].startswith('| item | value | target | met |')
    table = summary[-len(report['summary']):]
    assert all(line.startswith('| section ') or line.startswith('| op ') for line in table)


def test_dry_run_target_rows(dry_run):
    """The op's three speed targets, each with its target, not judged in the dry run; the values
    follow from the timed rows and the copy bandwidth measured in the section."""
    res, report, _ = dry_run
    section = report['sections']['op_targets']
    assert section['status'] == 'ok' and section['copy_gb_s'] > 0
    assert section['autotune'] == 'not run: autotuning times candidates on CUDA only'
    rows = {r['item']: r for r in section['rows']}
    big = 'op fwd+bwd bf16 16x16 tokens'
    assert {item: r['target'] for item, r in rows.items() if r['target']} == {
        'op fwd+bwd bf16 8x8 tokens: time': '<= 100 us', f'{big}: share of copy bandwidth': '>= 0.5',
        f"{big}: Triton vs authors' chain": '>= 10x'}
    for row in rows.values():
        assert row['met'] is None and 'dry run' in row['measured_on'] and row['value'] > 0, row
    both_us = rows[f'{big}: time']['value']
    # 11 C elements per token (4 C forward, 7 C backward), 2 bytes each, C = 64, 16 x 16 tokens
    assert rows[f'{big}: share of copy bandwidth']['value'] == pytest.approx(
        11 * 64 * 256 * 2 / (both_us * 1e-6) / 1e9 / section['copy_gb_s'])
    assert rows[f"{big}: Triton vs authors' chain"]['value'] == pytest.approx(
        rows[f"{big}: authors' chain time"]['value'] / both_us)
    summary = {r['item']: r for r in report['summary']}
    for item in ('op fwd+bwd bf16 8x8 tokens: time', f'{big}: share of copy bandwidth'):
        assert summary[item]['target'] == rows[item]['target'] and summary[item]['met'] is None
    assert "| op fwd+bwd bf16 16x16 tokens: Triton vs authors' chain |" in res.stdout


def test_the_autotuned_row(monkeypatch):
    """The kit's autotuned call (CUDA only in a run): the environment variable set for the call
    alone, each pass's choice recorded, the cache left empty (later sections use the defaults)."""
    import torch

    from mmmila.bench.gpu_kit.speed import autotuned_call
    from mmmila.kernels import tuning
    monkeypatch.delenv(tuning.ENV_VAR, raising=False)
    monkeypatch.setattr(tuning, 'autotune_requested',
                        lambda device: os.environ.get(tuning.ENV_VAR) == '1')
    monkeypatch.setattr(tuning, 'bench_ms', lambda fn: 1.0)
    qk, v = torch.randn(1, 64, 128, requires_grad=True), torch.randn(1, 64, 64, requires_grad=True)

    def timed():
        torch.ops.mmmila.linear_attention_triton(qk, v, 8, 8, 2)[0].sum().backward()
        return 0.5
    section = autotuned_call(timed, (8, 8), copy_gb_s=1.0, measured_on='test')
    assert sorted(section['autotune']['chosen']) == ['bwd', 'fwd'] and section['autotune']['fwd_bwd_ms'] == 0.5
    row = section['row']
    assert row['value'] == pytest.approx(11 * 64 * 64 * 2 / 0.5e-3 / 1e9) and row['met'] is False
    assert tuning.ENV_VAR not in os.environ and tuning.tuned_choices() == {}


@pytest.mark.parametrize('fault', ['scale', 'nan'])
def test_a_broken_op_fails_the_check(tmp_path, fault):
    """A 1e-3 relative error fails float32 (limit 1e-4), not 16-bit (2e-2); an unwritten token fails all."""
    res = run_kit('--dry-run', '--out', tmp_path, '--only', 'op_correctness', '--inject-fault', fault,
                  '--wheels', tmp_path / 'none')
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-2000:]
    report = json.loads((tmp_path / 'gpu_check.json').read_text())
    rows = report['sections']['op_correctness']['rows']
    assert report['sections']['op_correctness']['status'] == 'fail'
    if fault == 'scale':
        for row in rows:
            assert row['ok'] == (row['dtype'] != 'float32'), row
            if row['dtype'] == 'float32':
                assert row['out'] > 5e-4 and row['dqk'] > 5e-4 and row['dv'] > 5e-4
    else:
        assert all(row['nan'] and not row['ok'] for row in rows)
    assert '| section op_correctness | fail | ok | False |' in res.stdout


def test_bad_arguments(tmp_path):
    res = subprocess.run(['bash', str(REPO / 'tools' / 'gpu_check.sh'), '--out', str(tmp_path),
                          '--budget-s', '0'], capture_output=True, text=True,
                         env=dict(os.environ, PYTHON=sys.executable))
    assert res.returncode == 2 and '--budget-s must be positive, got 0.0' in res.stderr
    res = subprocess.run([sys.executable, str(TOOL), '--dry-run'], capture_output=True, text=True)
    assert res.returncode == 2 and 'the following arguments are required: --out' in res.stderr
    (tmp_path / 'file').write_text('')
    res = subprocess.run([sys.executable, str(TOOL), '--out', str(tmp_path / 'file')], capture_output=True,
                         text=True)
    assert res.returncode == 2 and 'exists and is not a folder' in res.stderr


def test_the_report_records_the_command_as_typed(dry_run):
    """At the repository's root, with no folder of the machine it ran on (those outside the
    repository keep their last part only)."""
    _, report, out = dry_run
    assert report['command'] == (f'python tools/gpu_check.py --dry-run --out .../out --wheels .../wheels '
                                 f'--seed {seed_for(7)} --budget-s 1200')
    md = (out / 'gpu_check.md').read_text()
    assert f"command `{report['command']}`" in md
    assert str(out.parent) not in md and str(REPO) not in md
