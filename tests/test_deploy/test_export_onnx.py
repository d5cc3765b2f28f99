"""tools/deploy/export_onnx.py: backbone, UperNet and Mask R-CNN's backbone + FPN through the dynamo
ONNX exporter, checked with onnxruntime against eager at the export size and two other sizes.

A whole model's export takes 40-80 s on a 2-core CPU: those tests are marked slow; the default
suite exports one MILA block (the attention op with dynamic H and W) and checks the tool's parts.
"""
from __future__ import annotations

import subprocess
import sys

import onnx
import pytest
import torch

from ..conftest import REPO, TINY_ARCH, seed_for

from mmmila.deploy import onnx_export as export_onnx

SEG_TOY = REPO / 'configs' / 'demo' / 'upernet_mila_t_toy.py'
DET_TOY = REPO / 'configs' / 'demo' / 'mask_rcnn_mila_t_toy.py'
CLS = REPO / 'configs' / 'mila_t_in1k.py'
# The detector at the tiny width (the demo runs MILA-T's width): backbone and FPN inputs.
DET_TINY = {'model.backbone.arch': dict(_delete_=True, **TINY_ARCH), 'model.neck.in_channels': [32, 64, 128, 256]}


def _ops(path):
    model = onnx.load(str(path))
    return {(node.domain or 'ai.onnx', node.op_type) for node in model.graph.node}


def _export_and_check(config, tmp_path, part=None, shape=(64, 96), cfg_options=None):
    model, _ = export_onnx.load_model(str(config), cfg_options=cfg_options)
    module = export_onnx.Exportable(model, part or export_onnx.default_part(model)).eval()
    out = tmp_path / 'model.onnx'
    export_onnx.export(module, str(out), shape, dynamic=True)
    results = export_onnx.check(module, str(out), export_onnx.check_sizes(shape, True))
    return module, out, results


def _assert_plain_onnx(path):
    ops = _ops(path)
    assert all(domain == 'ai.onnx' for domain, _ in ops), f'custom domains in {ops}'
    assert ('ai.onnx', 'MatMul') in ops or ('ai.onnx', 'Einsum') in ops


class _BlockOnMap(torch.nn.Module):
    """One MILA block (C = 64, 2 heads) applied to a (B, C, H, W) map."""

    def __init__(self):
        super().__init__()
        from mmmila.models.layers import MILABlock
        self.block = MILABlock(64, 2)

    def forward(self, x):
        B, C, H, W = x.shape
        tokens = self.block(x.flatten(2).transpose(1, 2), (H, W))
        return tokens.transpose(1, 2).reshape(B, C, H, W)


def test_attention_block_exports_as_plain_onnx_with_dynamic_size(tmp_path):
    import onnxruntime as ort
    torch.manual_seed(seed_for(0))
    block = _BlockOnMap().eval()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    h, w = torch.export.Dim('h', min=2, max=128), torch.export.Dim('w', min=2, max=128)
    program = torch.onnx.export(block, (torch.randn(1, 64, 6, 9),), dynamo=True, verbose=False,
                                dynamic_shapes={'x': {2: h, 3: w}})
    path = tmp_path / 'block.onnx'
    program.save(str(path))
    _assert_plain_onnx(path)
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    for size in [(6, 9), (11, 5), (16, 16)]:
        x = torch.randn(1, 64, *size)
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        with torch.no_grad():
            expected = block(x)
        assert (got - expected).abs().max() <= 1e-4 * expected.abs().max(), size


@pytest.mark.slow
def test_backbone(tmp_path):
    module, out, results = _export_and_check(SEG_TOY, tmp_path, part='backbone')
    assert len(results) == 3 and len({r['size'] for r in results}) == 3
    for r in results:
        assert r['rel_err'] <= 1e-4, r
        assert len(r['outputs']) == 4 and r['outputs'][0][2:] == (r['size'][0] // 4, r['size'][1] // 4)
    _assert_plain_onnx(out)


@pytest.mark.slow
def test_upernet_segmentor(tmp_path):
    module, out, results = _export_and_check(SEG_TOY, tmp_path)
    for r in results:
        assert r['rel_err'] <= 1e-4, r
        assert r['outputs'] == [(1, 150) + r['size']]          # logits at the image size
    _assert_plain_onnx(out)


@pytest.mark.slow
def test_mask_rcnn_backbone_and_fpn(tmp_path):
    module, out, results = _export_and_check(DET_TOY, tmp_path, cfg_options=DET_TINY)
    assert module.part == 'features'
    for r in results:
        assert r['rel_err'] <= 1e-4, r
        assert len(r['outputs']) == 5                          # FPN P2-P6
    _assert_plain_onnx(out)


def test_normalisation_is_in_the_graph(tmp_path):
    """The exported graph takes a 0-255 image: eager through the model's own preprocessor agrees."""
    model, _ = export_onnx.load_model(str(SEG_TOY))
    module = export_onnx.Exportable(model, 'backbone').eval()
    image = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        data = model.data_preprocessor(dict(inputs=[image[0]]), training=False)['inputs']
        expected = model.backbone(data)
        got = module(image)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('out', [1, 2, 3, 6, (2, 5)])
def test_exportable_pooling_equals_adaptive_average_pooling(out):
    pool = torch.nn.AdaptiveAvgPool2d(out)
    wrapper = torch.nn.Sequential(pool)
    for size in [(2, 3), (4, 2), (7, 13), (12, 12)]:
        x = torch.randn(2, 5, *size)
        expected = pool(x)
        with export_onnx.exportable_pooling(wrapper) as swap:
            got = wrapper(x)
        assert len(swap.swapped) == 1 and wrapper[0] is pool      # restored afterwards
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


TOOL = REPO / 'tools' / 'deploy' / 'export_onnx.py'


def run_tool(*args, cwd=REPO):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_command_line(tmp_path):
    out = tmp_path / 'seg.onnx'
    result = run_tool(SEG_TOY, '--out', out, '--shape', '64', '--part', 'backbone')
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.is_file() and 'onnxruntime vs eager at 64x64' in result.stdout


def _det_model():
    return export_onnx.load_model(str(DET_TOY), cfg_options=DET_TINY)[0]


@pytest.mark.parametrize('call,message', [
    (lambda: export_onnx.load_model('missing_config.py'), "config file 'missing_config.py' does not exist"),
    (lambda: export_onnx.load_model(str(SEG_TOY), 'missing.pth'),
     "checkpoint file 'missing.pth' does not exist"),
    (lambda: export_onnx.Exportable(_det_model(), 'model'), 'cannot be exported'),
    (lambda: export_onnx.Exportable(export_onnx.load_model(str(CLS))[0], 'features'),
     "is a detector's backbone + neck, and MESAClassifier is a classifier, not a detector"),
    (lambda: export_onnx.Exportable(_det_model(), 'head'), 'must be one of'),
    (lambda: export_onnx.export(export_onnx.Exportable(export_onnx.load_model(str(SEG_TOY))[0], 'backbone'),
                                'x.onnx', (70, 70), dynamic=True), 'multiples of 32, got 70x70'),
])
def test_errors_name_the_model_or_input_in_one_sentence(call, message):
    """The library's errors say what is wrong with the config, checkpoint, model or input, not which
    command-line flag to change (the library has no command line)."""
    with pytest.raises(export_onnx.ExportError) as info:
        call()
    text = str(info.value)
    assert message in text and '\n' not in text and '--' not in text, text


def test_the_tool_as_a_user_runs_it(tmp_path):
    """``python tools/deploy/export_onnx.py`` with a missing config: one sentence, exit status 1."""
    result = run_tool('missing.py', '--out', tmp_path / 'x.onnx', cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == ("tools/deploy/export_onnx.py: error: config file 'missing.py' does not "
                                     "exist") or "config file 'missing.py' does not exist" in result.stderr
    assert 'Traceback' not in result.stderr and 'pkg_resources' not in result.stderr
    result = run_tool(SEG_TOY, '--out', tmp_path / 'x.onnx', '--shape', '70', '--dynamic', cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.strip().endswith('got 70x70'), result.stderr[-2000:]
