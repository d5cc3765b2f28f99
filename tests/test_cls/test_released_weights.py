"""The classifier of configs/mila_*_in1k.py with the authors' weights: the fixture's logits through
mmpretrain's data preprocessor, ImageClassificationInferencer on a photo, tools/test.sh top-1/top-5."""
from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch

from mmmila.bench.errors import rel_err

from ..conftest import REPO
from .conftest import tiny_config

TOL = 1e-5
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)  # the authors' (timm's) ImageNet mean
STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)


@pytest.fixture
def checkpoints(tmp_path, authors_fixture):
    """The fixture's weights in the released format and converted by tools/convert_checkpoint.py."""
    released = tmp_path / 'MLLA_tiny.pth'
    torch.save(authors_fixture['checkpoint'], released)
    converted = tmp_path / 'mila_tiny_mmmila.pth'
    subprocess.run([sys.executable, str(REPO / 'tools' / 'convert_checkpoint.py'), str(released), str(converted)],
                   check=True, capture_output=True, timeout=600)
    return released, converted


def build(config):
    import mmmila.distill  # noqa: F401
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(str(config))
    init_default_scope('mmpretrain')
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    return MODELS.build(model_cfg).eval()


def raw_bgr_images(x_cls):
    """Invert the authors' normalisation: (B, 3, H, W) normalised RGB -> 0-255 BGR images."""
    return [(img * STD + MEAN).flip(0) for img in x_cls]


@pytest.mark.parametrize('fmt', ['converted', 'released'])
def test_fixture_logits_through_the_data_preprocessor(tmp_path, authors_fixture, checkpoints, fmt):
    from mmengine.runner import load_checkpoint
    model = build(tiny_config(tmp_path))
    path = checkpoints[1] if fmt == 'converted' else checkpoints[0]  # released: converted on loading
    load_checkpoint(model, str(path), map_location='cpu', strict=True)
    data = model.data_preprocessor(dict(inputs=raw_bgr_images(authors_fixture['x_cls'])), False)
    torch.testing.assert_close(data['inputs'], authors_fixture['x_cls'], rtol=0, atol=2e-6)
    with torch.no_grad():
        logits = model(data['inputs'], mode='tensor')
    assert rel_err(logits, authors_fixture['logits']) <= TOL
    preds = model.test_step(dict(inputs=raw_bgr_images(authors_fixture['x_cls'])))
    assert [p.pred_label.item() for p in preds] == authors_fixture['logits'].argmax(1).tolist()


def test_inferencer_on_a_photo_matches_the_authors_preprocessing(tmp_path, authors_fixture, checkpoints):
    """ImageClassificationInferencer with the config: short side 256 (bicubic), centre crop 224,
    the authors' mean/std; checked against the same steps done by hand with PIL."""
    from mmengine.config import Config
    from mmpretrain.apis import ImageClassificationInferencer
    from PIL import Image
    from skimage import data

    photo = Image.fromarray(data.chelsea()).resize((450, 300), Image.BICUBIC)  # 256 x 384 after resize
    path = tmp_path / 'chelsea.png'
    photo.save(path)
    cfg = Config.fromfile(str(tiny_config(tmp_path)))
    # the released file, converted as it is loaded
    inferencer = ImageClassificationInferencer(cfg, pretrained=str(checkpoints[0]), device='cpu')
    result, = inferencer(str(path))

    resized = np.asarray(photo.resize((384, 256), Image.BICUBIC), dtype=np.float32)
    crop = torch.from_numpy(resized[16:240, 80:304]).permute(2, 0, 1)  # RGB, 224 x 224
    model = build(tiny_config(tmp_path))
    from mmengine.runner import load_checkpoint
    load_checkpoint(model, str(checkpoints[1]), map_location='cpu', strict=True)
    with torch.no_grad():
        scores = model(((crop - MEAN) / STD)[None], mode='tensor').softmax(-1)[0]
    np.testing.assert_allclose(result['pred_scores'], scores.numpy(), rtol=0, atol=1e-5)
    assert result['pred_label'] == int(scores.argmax())
    from mmpretrain.datasets.categories import IMAGENET_CATEGORIES
    assert result['pred_class'] == IMAGENET_CATEGORIES[result['pred_label']]


@pytest.mark.slow
def test_test_sh_reports_top1_top5_of_released_weights(tmp_path, authors_fixture, checkpoints,
                                                       tiny_imagenet):
    """tools/test.sh CONFIG MLLA.pth 1 on an ImageNet-format folder (val/ + meta/val.txt)."""
    config = tiny_config(tmp_path, data_root=tiny_imagenet)
    env_python = str(REPO / '.venv' / 'bin' / 'python') if (REPO / '.venv').exists() else sys.executable
    out = subprocess.run(['bash', str(REPO / 'tools' / 'test.sh'), str(config), str(checkpoints[0]), '1'],
                         cwd=REPO, capture_output=True, text=True, timeout=600,
                         env={'PYTHON': env_python, 'PATH': '/usr/bin:/bin', 'OMP_NUM_THREADS': '1'})
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(ln for ln in out.stdout.splitlines() + out.stderr.splitlines() if 'accuracy/top1' in ln)
    top1 = float(line.split('accuracy/top1:')[1].split()[0])
    top5 = float(line.split('accuracy/top5:')[1].split()[0])

    # the same numbers by hand: the fixture model on the config's test pipeline
    from mmengine.config import Config
    from mmengine.runner import Runner
    cfg = Config.fromfile(str(config))
    model = build(config)  # (sets mmpretrain's default scope, which the dataloader's types need)
    loader = Runner.build_dataloader(cfg.test_dataloader)
    from mmengine.runner import load_checkpoint
    load_checkpoint(model, str(checkpoints[1]), map_location='cpu', strict=True)
    hits1 = hits5 = n = 0
    for batch in loader:
        for pred in model.test_step(batch):
            top = pred.pred_score.topk(5).indices.tolist()
            hits1 += int(top[0] == pred.gt_label.item())
            hits5 += int(pred.gt_label.item() in top)
            n += 1
    assert n == 6
    assert top1 == pytest.approx(100 * hits1 / n, abs=0.01)
    assert top5 == pytest.approx(100 * hits5 / n, abs=0.01)
