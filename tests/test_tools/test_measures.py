"""The measures every benchmark, the GPU kit and the tests share (``mmmila.bench``): errors, the
measured calls, and the command line a report records."""
from __future__ import annotations

import math
import sys

import pytest
import torch

from mmmila.bench.command import command_line
from mmmila.bench.errors import max_abs_err, max_rel_err, rel_err, rel_rms
from mmmila.bench.steps import model_step, outputs_and_grads

from ..conftest import REPO, seed_for


def test_rel_err_is_the_largest_error_over_the_largest_magnitude():
    expected = torch.tensor([[4.0, -8.0], [0.0, 2.0]])
    actual = expected + torch.tensor([[0.0, 0.0], [0.4, -0.2]])
    # one scale for the whole tensor: an element near 0 does not blow the figure up
    assert rel_err(actual, expected) == pytest.approx(0.4 / 8)
    assert max_abs_err(actual, expected) == pytest.approx(0.4)
    assert rel_rms(actual, expected) == pytest.approx(math.sqrt(0.16 + 0.04) / math.sqrt(16 + 64 + 4))
    assert rel_err(expected, expected) == 0.0 and rel_err(torch.zeros(3), torch.zeros(3)) == 0.0
    assert math.isnan(rel_err(torch.tensor([1.0, float('nan')]), torch.tensor([1.0, 1.0])))
    with pytest.raises(ValueError, match=r'shape \(2, 2\).*shape \(2,\)'):
        rel_err(actual, expected[0])                                      # no broadcasting


def test_rel_err_is_computed_in_float64():
    """A float32 result 1 ulp away from its float64 truth: the error is that ulp, not round-off of the
    subtraction in float32."""
    truth = torch.randn(1000, generator=torch.Generator().manual_seed(seed_for(1)), dtype=torch.float64)
    got = truth.float()
    assert 0 < rel_err(got, truth) <= 2 ** -24
    expected = (got.double() - truth).abs().max().item() / truth.abs().max().item()
    assert rel_err(got, truth) == pytest.approx(expected)


def test_max_rel_err_pairs_outputs():
    a, b = torch.ones(3), torch.full((2,), 4.0)
    assert max_rel_err([a * 1.1, b], [a, b * 1.5]) == pytest.approx(max(0.1, 2.0 / 6.0))
    with pytest.raises(ValueError):
        max_rel_err([a], [a, b])


def _model():
    torch.manual_seed(seed_for(2))
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())


def test_model_step_modes():
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed_for(3)))
    model = _model()
    step = model_step(model, x, 'forward')
    assert not model.training
    step()
    assert all(p.grad is None for p in model.parameters())
    step = model_step(model, x, 'forward+backward')
    assert model.training
    step()
    assert all(p.grad is not None for p in model.parameters())           # kept until the next call
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model_step(model, x, 'train step', optimizer=opt)()                  # starts from no gradients
    assert all(p.grad is None for p in model.parameters())               # made and freed in the call
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    with pytest.raises(ValueError, match='needs an optimizer'):
        model_step(model, x, 'train step')
    with pytest.raises(ValueError, match='mode must be one of'):
        model_step(model, x, 'backward')


def test_outputs_and_grads_uses_fresh_leaves():
    gen = torch.Generator().manual_seed(seed_for(4))
    qk, v, g = (torch.randn(2, 5, generator=gen) for _ in range(3))
    order = []
    out, dqk, dv = outputs_and_grads(lambda a, b, k: (a * b * k), qk, v, g, 3.0,
                                     before=lambda: order.append('before'))
    assert order == ['before'] and qk.grad is None and not out.requires_grad
    torch.testing.assert_close(out, qk * v * 3)
    torch.testing.assert_close(dqk, g * v * 3)
    torch.testing.assert_close(dv, g * qk * 3)


def test_command_line_is_relative_to_the_repository(tmp_path):
    tool = REPO / 'tools' / 'gpu_check.py'
    line = command_line(tool, ['--out', str(tmp_path / 'out'), '--wheels', str(REPO / '.gpu_wheels'),
                               f'--seed=1', f'--json={tmp_path}/r.json', 'a b'], REPO, cwd=REPO)
    assert line == ("python tools/gpu_check.py --out .../out --wheels .gpu_wheels --seed=1 "
                    "--json=.../r.json 'a b'")
    assert str(tmp_path) not in line and str(REPO) not in line
    # run from another folder: the program and the paths typed relative to it, as from the root
    (tmp_path / 'cfg.py').write_text('')
    assert command_line('../../' + str(tool.relative_to(REPO)), ['--sizes', '64', 'cfg.py', 'mila-t'], REPO,
                        cwd=REPO / 'tools' / 'deploy') == 'python tools/gpu_check.py --sizes 64 cfg.py mila-t'
    assert command_line(tool, ['--config', str(REPO / 'configs' / 'mila_t_in1k.py')], REPO,
                        cwd=tmp_path) == 'python tools/gpu_check.py --config configs/mila_t_in1k.py'
    assert command_line(sys.executable, [], REPO).startswith('python .../')
