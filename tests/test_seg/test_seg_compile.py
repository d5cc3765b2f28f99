"""``--cfg-options compile=...`` through tools/train.sh and tools/test.sh on the toy UperNet.

tools/train.py and tools/test.py compile the model in place (``nn.Module.compile``) when the config
has ``compile``, instead of mmengine's compilation of ``train_step`` (which fails with torch 2.13, see
``mmmila.utils.run_setup.compile_model``). The slow test trains a few iterations with the
model compiled (dynamo + AOTAutograd, ``backend='aot_eager'``: the same graph capture as inductor,
without the C++ builds that take minutes on this 2-core machine), checks that dynamo broke no graph
inside mmmila's code, then scores the checkpoint with tools/test.sh compiled and eager: the metrics
must be the same.
"""
from __future__ import annotations

import re

import pytest
from mmengine.config import Config

from ..conftest import REPO, seed_for
from ..test_deploy.helpers import graph_break_files, project_files
from .conftest import TOY_CONFIG
from .test_seg_training import launch, parse_metrics



def test_compile_options_are_checked_before_anything_runs():
    from mmmila.utils.run_setup import LaunchError, compile_options
    assert compile_options(Config(dict())) is None
    assert compile_options(Config(dict(compile=False))) is None
    assert compile_options(Config(dict(compile=True))) == {}
    assert compile_options(Config(dict(compile=dict(backend='aot_eager', dynamic=True)))) == {
        'backend': 'aot_eager', 'dynamic': True}
    with pytest.raises(LaunchError, match="compile must be True, False or a dict.*'yes'"):
        compile_options(Config(dict(compile='yes')))


def test_compile_model_compiles_in_place_and_turns_off_the_runners_own():
    import copy
    from types import SimpleNamespace

    import torch

    from mmmila.utils.run_setup import compile_model

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(x)

    logged = []
    runner = SimpleNamespace(cfg=Config(dict(compile=dict(backend='eager'))), model=Model(),
                             logger=SimpleNamespace(info=logged.append), _maybe_compile=None)
    keys = list(runner.model.state_dict())
    assert compile_model(runner)
    model = runner.model
    assert model._compiled_call_impl is not None and 'model compiled' in logged[0]
    assert list(model.state_dict()) == keys             # checkpoints keep their keys
    runner._maybe_compile('train_step')                 # mmengine's own compilation: a no-op now
    x = torch.ones(1, 3)
    assert torch.equal(model(x), model.fc(x))
    ema = copy.deepcopy(model)                          # as an EMA hook copies the model
    with torch.no_grad():
        ema.fc.weight.zero_()
        ema.fc.bias.fill_(1.0)
    assert torch.equal(ema(x), torch.ones(1, 2)) and not torch.equal(model(x), torch.ones(1, 2))
    off = SimpleNamespace(cfg=Config(dict()), model=Model(), logger=None)
    assert not compile_model(off) and off.model._compiled_call_impl is None


@pytest.mark.slow
def test_compiled_training_and_testing_through_the_launchers(tmp_path, make_toy):
    root = make_toy(tmp_path / 'ADEChallengeData2016', seed=seed_for(0))
    data = ['--cfg-options'] + [f'{name}.dataset.data_root={root}' for name in
                                ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    train_sh, test_sh = str(REPO / 'tools' / 'train.sh'), str(REPO / 'tools' / 'test.sh')
    compiled = ['compile.backend=aot_eager']
    short = ['train_cfg.max_iters=6', 'train_cfg.val_interval=6', 'default_hooks.checkpoint.interval=6',
             'default_hooks.logger.interval=2', f'randomness.seed={seed_for(0)}']

    work = tmp_path / 'train'
    log = launch(train_sh, str(TOY_CONFIG), '1', '--work-dir', str(work), *data, *compiled, *short,
                 cwd=tmp_path, env={'TORCH_LOGS': 'graph_breaks'})
    assert 'model compiled with torch.compile' in log, log[-3000:]
    assert 'Model has been "compiled"' not in log            # not also mmengine's train_step compilation
    losses = [float(v) for v in re.findall(r'Iter\(train\).*?\sloss: ([\d.]+)', log)]
    assert len(losses) == 3 and all(0 < v < 20 for v in losses), losses
    broken_in = project_files(graph_break_files(log))
    assert broken_in == [], f'graph breaks inside mmmila: {broken_in}'
    checkpoint = work / 'iter_6.pth'
    assert checkpoint.is_file()

    scores = {}
    for name, extra in (('eager', []), ('compiled', compiled)):
        out = launch(test_sh, str(TOY_CONFIG), str(checkpoint), '1', '--work-dir', str(tmp_path / name),
                     *data, *extra, cwd=tmp_path)
        assert ('model compiled with torch.compile' in out) == (name == 'compiled')
        scores[name] = parse_metrics(out)
    assert scores['compiled'] == scores['eager'], scores
