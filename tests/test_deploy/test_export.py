"""torch.export of the MILA backbone, with static shapes and with dynamic H and W."""
from __future__ import annotations

import pytest
import torch
from torch.export import Dim

from mmmila.bench.errors import max_rel_err

from .helpers import tiny_backbone


@pytest.fixture(scope='module')
def model():
    return tiny_backbone().eval()


def _attention_nodes(program):
    return [n for n in program.graph.nodes if n.target == torch.ops.mmmila.linear_attention.default]


def test_static_export(model):
    image = torch.randn(1, 3, 64, 96)
    program = torch.export.export(model, (image,))
    assert len(_attention_nodes(program)) == 5
    with torch.no_grad():
        assert max_rel_err(program.module()(image), model(image)) <= 1e-5


def test_dynamic_export_runs_at_other_sizes(model):
    h, w = Dim('h32', min=1, max=64), Dim('w32', min=1, max=64)
    program = torch.export.export(model, (torch.randn(1, 3, 64, 96),),
                                  dynamic_shapes={'x': {2: 32 * h, 3: 32 * w}})
    nodes = _attention_nodes(program)
    assert len(nodes) == 5
    # the attention's map size is symbolic in the graph, not a constant of the example
    assert all(isinstance(node.args[2], torch.fx.Node) for node in nodes)
    exported = program.module()
    for size in [(128, 64), (96, 160)]:
        image = torch.randn(1, 3, *size)
        with torch.no_grad():
            assert max_rel_err(exported(image), model(image)) <= 1e-5, size


def test_exported_program_round_trips_through_a_file(model, tmp_path):
    """Saved and loaded: the op is found by name (``import mmmila`` registers it)."""
    image = torch.randn(1, 3, 64, 64)
    program = torch.export.export(model, (image,))
    torch.export.save(program, tmp_path / 'mila.pt2')
    loaded = torch.export.load(tmp_path / 'mila.pt2')
    with torch.no_grad():
        assert max_rel_err(loaded.module()(image), model(image)) <= 1e-5
