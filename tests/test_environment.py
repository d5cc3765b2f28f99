"""The environment that tools/install.sh builds works: compiled mmcv ops, Triton on CPU, registries."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from .conftest import REPO


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


def test_kernels_folder_is_installed_as_mmmila_kernels(tmp_path):
    """``kernels/`` ships as ``mmmila.kernels`` and as nothing else, whatever the checkout is called."""
    import importlib.metadata
    import subprocess
    import sys

    import mmmila
    import mmmila.kernels as ours
    # mmmila.kernels is the repository's kernels/ folder, imported as a subpackage of the installed mmmila.
    origin = Path(ours.__spec__.origin).resolve()
    assert ours.__spec__.name == 'mmmila.kernels' and origin.name == '__init__.py'
    assert origin.parent == (REPO / 'kernels').resolve() or origin.parent == Path(mmmila.__file__).resolve().parent / 'kernels'
    assert (origin.parent / 'linear_attn_fwd.py').exists()
    # The installed distribution declares no top-level `kernels` package ...
    dist = importlib.metadata.distribution('mmmila')
    top_level = (dist.read_text('top_level.txt') or '').split()
    assert 'kernels' not in top_level, top_level
    assert 'mmmila' not in importlib.metadata.packages_distributions().get('kernels', [])
    assert not [f for f in (dist.files or []) if f.parts and f.parts[0] == 'kernels']
    # ... and from outside the checkout, a top-level `import kernels` does not find our folder.
    probe = ('import importlib.util, sys; s = importlib.util.find_spec("kernels"); '
             'print(s.origin if s else "none")')
    out = subprocess.run([sys.executable, '-c', probe], cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == 'none' or Path(out).resolve().parent != origin.parent, out
