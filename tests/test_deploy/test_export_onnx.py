"""tools/deploy/export_onnx.py: backbone, UperNet and Mask R-CNN's backbone + FPN through the dynamo
ONNX exporter, checked with onnxruntime against eager at the export size and two other sizes."""
from __future__ import annotations

import sys

import onnx
import pytest
import torch

from ..conftest import REPO, TINY_ARCH

sys.path.insert(0, str(REPO / 'tools' / 'deploy'))
import export_onnx  # noqa: E402

SEG_TOY = REPO / 'configs' / 'demo' / 'upernet_mila_t_toy.py'
DET_TOY = REPO / 'configs' / 'demo' / 'mask_rcnn_mila_t_toy.py'
CLS = REPO / 'configs' / 'mila_t_in1k.py'
# The detector at the tiny width (the demo runs MILA-T's width): backbone and FPN inputs.
DET_TINY = {'model.backbone.arch': dict(TINY_ARCH), 'model.neck.in_channels': [32, 64, 128, 256]}


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


def test_backbone(tmp_path):
    module, out, results = _export_and_check(SEG_TOY, tmp_path, part='backbone')
    assert len(results) == 3 and len({r['size'] for r in results}) == 3
    for r in results:
        assert r['rel_err'] <= 1e-4, r
        assert len(r['outputs']) == 4 and r['outputs'][0][2:] == (r['size'][0] // 4, r['size'][1] // 4)
    _assert_plain_onnx(out)


def test_upernet_segmentor(tmp_path):
    module, out, results = _export_and_check(SEG_TOY, tmp_path)
    for r in results:
        assert r['rel_err'] <= 1e-4, r
        assert r['outputs'] == [(1, 150) + r['size']]          # logits at the image size
    _assert_plain_onnx(out)


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


def test_command_line(tmp_path, capsys):
    out = tmp_path / 'seg.onnx'
    assert export_onnx.main([str(SEG_TOY), '--out', str(out), '--shape', '64', '--part', 'backbone']) == 0
    text = capsys.readouterr().out
    assert out.is_file() and 'onnxruntime vs eager at 64x64' in text


@pytest.mark.parametrize('args,message', [
    (['missing_config.py'], "config file 'missing_config.py' does not exist"),
    ([str(SEG_TOY), 'missing.pth'], "checkpoint file 'missing.pth' does not exist"),
    ([str(DET_TOY), '--part', 'model'], 'cannot be exported'),
    ([str(CLS), '--part', 'features'], 'exports a detector'),
    ([str(SEG_TOY), '--shape', '70', '--dynamic'], 'multiples of 32'),
])
def test_errors_are_one_sentence(tmp_path, args, message):
    with pytest.raises(SystemExit) as info:
        export_onnx.main(args + ['--out', str(tmp_path / 'x.onnx')])
    text = str(info.value)
    assert message in text and '\n' not in text
