"""The launch counter (mmmila.bench.launches) and ``tools/benchmark.py --launches``."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from mmmila.bench.launches import LaunchCounter, count_launches
from tests.conftest import seed_for

REPO = Path(__file__).resolve().parents[2]


def test_counts_work_not_views_or_allocations():
    x = torch.randn(4, 6)
    with LaunchCounter() as c:
        y = x.view(24).unsqueeze(0).t()[:, 0]   # views
        torch.empty(10)                          # an allocation
        z = y * 2                                # work
        torch.zeros(3)                           # work (a fill)
    assert dict(c.launches.aten) == {'aten::mul': 1, 'aten::zeros': 1}
    assert z.shape == (24,)


def test_counts_inside_registered_ops_and_the_backward():
    """A registered op is not a launch: its implementation's calls are; the backward's too."""
    torch.manual_seed(seed_for(0))
    lin = nn.Linear(8, 3)
    h = torch.randn(5, 8, requires_grad=True)

    def step():
        torch.ops.mmmila.gelu_linear(h, lin.weight, lin.bias).sum().backward()

    launches = count_launches(step)
    assert not any(name.startswith('mmmila::') for name in launches.aten)
    # forward: gelu, linear; sum; backward: ones for sum's gradient (expand is a view), then the
    # backward op: gelu (recomputed), mm (dW), sum (db), mm (dh's matrix product), gelu_backward;
    # then the gradients accumulate into .grad (first step: no add)
    assert launches.aten['aten::gelu'] == 2 and launches.aten['aten::gelu_backward'] == 1
    assert launches.aten['aten::mm'] == 2 and launches.aten['aten::linear'] == 1
    assert launches.triton == {}


def test_counts_triton_launches_not_the_interpreters_copies():
    """Under the Triton interpreter a launch copies its tensors in and out with aten calls; they are
    not launches. The dwconv op's forward is one kernel and nothing else."""
    import mmmila.kernels  # noqa: F401  (registers the Triton ops)

    g = torch.Generator().manual_seed(seed_for(1))
    x = torch.randn(1, 12, 8, generator=g)
    w, b = torch.randn(8, 1, 3, 3, generator=g), torch.randn(8, generator=g)
    launches = count_launches(lambda: torch.ops.mmmila.dwconv_tokens_triton(x, w, b, 3, 4, None, None, True,
                                                                             'none'))
    assert dict(launches.triton) == {'_dwconv_fwd_kernel': 1} and launches.total == 1


def test_counts_launches_after_a_copy_inside_an_op():
    """A registered op whose implementation copies (``reshape`` of a non-contiguous tensor) before it
    launches: the copy and the launch are counted (the counter is entered again for the copy, and
    leaving that must not stop the count of the launch)."""
    import mmmila.kernels  # noqa: F401  (registers the Triton ops)

    g = torch.Generator().manual_seed(seed_for(2))
    x = torch.randn(5, 3, 16, generator=g).transpose(0, 1)   # (3, 5, 16), not contiguous
    norm, lin = nn.LayerNorm(16), nn.Linear(16, 8)
    launches = count_launches(lambda: torch.ops.mmmila.norm_linears_triton(
        x, norm.weight, norm.bias, norm.eps, [lin.weight], [lin.bias]))
    assert dict(launches.triton) == {'_chain_fwd_kernel': 1} and launches.total == 2


def _launch_table(tmp_path, models):
    md = tmp_path / 'launches.md'
    res = subprocess.run([sys.executable, 'tools/benchmark.py', *models, '--launches', '--dtypes', 'float32',
                          '--markdown', str(md)], cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-2000:]
    row = next(line for line in res.stdout.splitlines() if line.startswith('| float32 |'))
    first, second, ratio = [cell.strip() for cell in row.strip('|').split('|')][1:]
    assert int(first) > 0 and int(second) > 0
    assert ratio == f'{int(first) / int(second):.2f}x'
    assert f'python tools/benchmark.py {" ".join(models)} --launches' in md.read_text()
    return int(first), int(second)


def test_benchmark_launches_prints_the_table(tmp_path):
    _launch_table(tmp_path, ['convnext-t', 'swin-t'])


@pytest.mark.slow
def test_benchmark_launches_of_mila_on_its_triton_path(tmp_path):
    """MILA-T's Triton path under the interpreter (about 6 minutes): its float32 training step
    launches no more kernels than Swin-T's (issue 24; 838 against 847 at 64x64 on 2026-12-06, and
    1,666 before the block's ops were fused, commit 6a1246b)."""
    mila, swin = _launch_table(tmp_path, ['mila-t', 'swin-t'])
    assert mila <= swin


def test_benchmark_launches_rejects_a_map_too_small_for_training():
    res = subprocess.run([sys.executable, 'tools/benchmark.py', 'mila-t', '--launches', '--launch-size', '32'],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and '--launch-size 32 with batch 1' in res.stderr
