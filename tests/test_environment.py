"""The environment that tools/install.sh builds works: compiled mmcv ops, Triton on CPU, registries."""
from __future__ import annotations

import os

import pytest
import torch


def test_mmcv_compiled_nms_runs_on_cpu():
    from mmcv.ops import nms
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    assert dets.shape == (2, 5)


def test_mmcv_compiled_roi_align_runs_on_cpu_with_grad():
    from mmcv.ops import roi_align
    feat = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8).requires_grad_()
    rois = torch.tensor([[0, 0, 0, 4, 4]], dtype=torch.float32)
    out = roi_align(feat, rois, (2, 2), 1.0, 2, 'avg', True)
    assert out.shape == (1, 1, 2, 2)
    # aligned=True: the top-left bin samples pixels (0|1, 0|1) exactly, so it is their mean (4.5)
    assert out[0, 0, 0, 0].item() == pytest.approx(feat[0, 0, :2, :2].mean().item(), abs=1e-5)
    out.sum().backward()
    assert feat.grad.abs().sum() > 0


def test_triton_interpreter_runs_a_project_kernel_on_cpu():
    """The fused attention kernel of mmmila.kernels on CPU tensors, against the reference."""
    if torch.cuda.is_available():
        pytest.skip('a GPU is present; kernels are tested on it by tests/test_kernels')
    assert os.environ.get('TRITON_INTERPRET') == '1'
    from mmmila.ops import mila_linear_attention, mila_linear_attention_ref
    qk = torch.randn(1, 35, 128)
    v = torch.randn(1, 35, 64)
    out = mila_linear_attention(qk, v, (5, 7), 2, backend='triton')
    torch.testing.assert_close(out, mila_linear_attention_ref(qk, v, (5, 7), 2), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('scope', ['mmpretrain', 'mmdet', 'mmseg'])
def test_mila_is_in_every_registry(scope):
    import importlib

    import mmmila  # noqa: F401
    from mmmila.models import MILA
    registry = importlib.import_module(f'{scope}.registry').MODELS
    assert registry.get('MILA') is MILA
    model = registry.build(dict(type='MILA', arch=dict(embed_dims=32, depths=(1, 1, 1, 1),
                                                         num_heads=(1, 2, 4, 8)), out_indices=(0, 3)))
    assert isinstance(model, MILA) and model.out_indices == (0, 3)


def test_kernels_folder_is_installed_as_mmmila_kernels():
    import importlib.util
    spec = importlib.util.find_spec('mmmila.kernels')
    assert spec is not None and spec.origin.replace(os.sep, '/').endswith('kernels/__init__.py')
    assert importlib.util.find_spec('kernels') is None or 'mmmila' not in (importlib.util.find_spec('kernels').origin or '')
