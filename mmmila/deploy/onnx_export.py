"""Export a model of a config to ONNX with PyTorch's dynamo-based exporter, then check it.

The export and its check, behind ``tools/deploy/export_onnx.py`` (which parses the command line and
prints). What is exported (:class:`Exportable`, ``part``; :func:`default_part` picks by model):

- ``model``: a segmentor (mmseg EncoderDecoder, e.g. UperNet) as image -> logits (B, classes, H, W),
  resized to the input size as mmseg's inference does; a classifier (mmpretrain) as image -> logits.
- ``features``: a detector (mmdet, e.g. Mask R-CNN) as image -> its neck's feature maps (FPN); the
  detection heads (RPN proposals, NMS, RoIAlign) are not exported.
- ``backbone``: the backbone alone, image -> its stage outputs.

The graph takes the image as the data loader gives it (B, 3, H, W), float32, channel order and
0-255 range of the config's pipeline; the data preprocessor's normalisation (mean, std, BGR->RGB)
is part of the graph. MILA's attention becomes plain ONNX operators (MatMul, Einsum, Elu, Cos,
Sin...): any ONNX runtime runs it without a custom operator. With ``dynamic`` H and W are symbolic
(multiples of 32; the batch stays as exported, 1 by default).

:func:`check` runs the file with onnxruntime on CPU and compares it with the PyTorch model in eager
mode on random images (:func:`check_sizes`: the export size and, for a dynamic graph, two others),
by :func:`mmmila.bench.errors.rel_err`. Errors are :class:`ExportError`, one sentence that names
what is wrong with the config, the checkpoint, the model or the input.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from mmmila.bench.errors import rel_err

PARTS = ('model', 'features', 'backbone')
MULTIPLE = 32  # MILA's stride: dynamic H and W are multiples of it


class ExportError(Exception):
    """A bad config, checkpoint, part or model type; the message is one sentence."""


# ---- building --------------------------------------------------------------------------------
def load_model(config: str, checkpoint: str | None = None, cfg_options: dict | None = None) -> tuple:
    """(model in eval mode, config) for ``config``, with ``checkpoint`` loaded when given."""
    if not os.path.isfile(config):
        raise ExportError(f'config file {config!r} does not exist')
    if checkpoint is not None and not os.path.isfile(checkpoint):
        raise ExportError(f'checkpoint file {checkpoint!r} does not exist')
    from mmengine.registry import MODELS, init_default_scope

    import mmmila  # noqa: F401  (registers MILA)
    from mmmila.utils.cli import load_config

    try:
        cfg = load_config(config, cfg_options)
    except Exception as err:  # a config that does not parse: say which and why, in one line
        raise ExportError(f'config {config!r} cannot be read ({type(err).__name__}: '
                          f'{str(err).splitlines()[0] if str(err) else ""})') from err
    if 'model' not in cfg:
        raise ExportError(f'config {config!r} defines no model')
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    model_cfg = cfg.model.copy()
    backbone_cfg = model_cfg.get('backbone')
    if checkpoint is not None and isinstance(backbone_cfg, dict):
        backbone_cfg.pop('init_cfg', None)          # the checkpoint replaces any pretrained backbone
    model = MODELS.build(model_cfg)
    if checkpoint is not None:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    model.eval()
    return model, cfg


def _kind(model: nn.Module) -> str:
    """'segmentor', 'detector', 'classifier' or 'backbone' (a bare backbone config)."""
    for kind, module, cls in (('segmentor', 'mmseg.models.segmentors', 'BaseSegmentor'),
                              ('detector', 'mmdet.models.detectors', 'BaseDetector'),
                              ('classifier', 'mmpretrain.models.classifiers', 'BaseClassifier')):
        try:
            base = getattr(__import__(module, fromlist=[cls]), cls)
        except ImportError:
            continue
        if isinstance(model, base):
            return kind
    return 'backbone' if not hasattr(model, 'backbone') else 'other'


def default_part(model: nn.Module) -> str:
    return {'detector': 'features'}.get(_kind(model), 'model')


class _Normalise(nn.Module):
    """The data preprocessor's normalisation: optional BGR<->RGB swap, then (x - mean) / std."""

    def __init__(self, preprocessor: nn.Module | None) -> None:
        super().__init__()
        mean = getattr(preprocessor, 'mean', None)
        std = getattr(preprocessor, 'std', None)
        self.swap = bool(getattr(preprocessor, '_channel_conversion', None)   # mmengine, mmdet
                         or getattr(preprocessor, 'channel_conversion', None)    # mmseg
                         or getattr(preprocessor, 'to_rgb', False))              # mmpretrain
        self.enabled = bool(getattr(preprocessor, '_enable_normalize', mean is not None))
        self.register_buffer('mean', (mean if mean is not None else torch.zeros(3, 1, 1)).clone().view(1, -1, 1, 1))
        self.register_buffer('std', (std if std is not None else torch.ones(3, 1, 1)).clone().view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.swap:
            x = x.flip(1)
        return (x - self.mean) / self.std if self.enabled else x


class Exportable(nn.Module):
    """image (B, 3, H, W) -> tensors: the exported part of ``model`` behind its normalisation."""

    def __init__(self, model: nn.Module, part: str) -> None:
        super().__init__()
        kind = _kind(model)
        if part not in PARTS:
            raise ExportError(f'the part to export must be one of {PARTS}, got {part!r}')
        if kind == 'other' or (kind == 'backbone' and part != 'model'):
            raise ExportError(f'a {type(model).__name__} cannot be exported as {part!r}: mmseg segmentors, '
                              'mmdet detectors (backbone + neck), mmpretrain classifiers and (as a whole '
                              'model) backbones can')
        if part == 'model' and kind == 'detector':
            raise ExportError(f'the whole {type(model).__name__} cannot be exported (its RPN, NMS and '
                              "RoIAlign are not ONNX-exportable here); its 'features' (backbone + neck) "
                              "or its 'backbone' can")
        if part == 'features' and kind != 'detector':
            raise ExportError(f"the part 'features' is a detector's backbone + neck, and "
                              f'{type(model).__name__} is a {kind}, not a detector')
        self.kind, self.part = kind, part
        self.model = model
        self.normalise = _Normalise(getattr(model, 'data_preprocessor', None))

    def forward(self, image: torch.Tensor):
        x = self.normalise(image)
        if self.kind == 'backbone':
            return tuple(self.model(x))
        if self.part == 'backbone':
            return tuple(self.model.backbone(x))
        if self.part == 'features':
            return tuple(self.model.extract_feat(x))
        if self.kind == 'segmentor':
            logits = self.model.encode_decode(x, [dict(img_shape=tuple(x.shape[2:]))])
            return (logits,)
        return (self.model(x, mode='tensor'),)             # classifier: its head's logits


class _AdaptiveAvgPool2dByMatrices(nn.Module):
    """nn.AdaptiveAvgPool2d as two products with averaging matrices, exportable with symbolic sizes.

    PyTorch's ONNX decomposition of adaptive average pooling fixes its window layout from the
    example's map size, so a graph exported at one size fails or is wrong at another (UperNet's
    pyramid pooling). Output row i averages input rows [floor(i H / o), ceil((i + 1) H / o)),
    as PyTorch's kernel does; the same for columns.
    """

    def __init__(self, output_size) -> None:
        super().__init__()
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)

    @staticmethod
    def _matrix(size, out: int, like: torch.Tensor) -> torch.Tensor:
        i = torch.arange(out, device=like.device).unsqueeze(1)
        j = torch.arange(size, device=like.device).unsqueeze(0)
        start = torch.div(i * size, out, rounding_mode='floor')
        end = torch.div((i + 1) * size + out - 1, out, rounding_mode='floor')
        inside = ((j >= start) & (j < end)).to(like.dtype)
        return inside / (end - start).to(like.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        oh = x.shape[-2] if self.output_size[0] is None else self.output_size[0]
        ow = x.shape[-1] if self.output_size[1] is None else self.output_size[1]
        rows = self._matrix(x.shape[-2], oh, x)                  # (oh, H)
        cols = self._matrix(x.shape[-1], ow, x)                  # (ow, W)
        return rows @ x @ cols.transpose(0, 1)


class exportable_pooling:
    """Context manager: the module's nn.AdaptiveAvgPool2d layers replaced by the matrix form."""

    def __init__(self, module: nn.Module) -> None:
        self.module, self.swapped = module, []

    def __enter__(self):
        for parent in self.module.modules():
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.AdaptiveAvgPool2d):
                    setattr(parent, name, _AdaptiveAvgPool2dByMatrices(child.output_size))
                    self.swapped.append((parent, name, child))
        return self

    def __exit__(self, *exc):
        for parent, name, child in self.swapped:
            setattr(parent, name, child)
        return False


# ---- exporting and checking ------------------------------------------------------------------
def export(module: Exportable, out: str, shape: tuple[int, int], dynamic: bool,
           batch: int = 1, opset: int | None = None):
    """Export with ``torch.onnx.export(dynamo=True)``; returns the ONNXProgram (also saved to ``out``)."""
    h, w = shape
    if dynamic and (h % MULTIPLE or w % MULTIPLE):
        raise ExportError(f'a graph with dynamic H and W is exported at a size of multiples of {MULTIPLE}, '
                          f'got {h}x{w}')
    image = torch.rand(batch, 3, h, w) * 255
    dynamic_shapes = None
    if dynamic:
        dh = torch.export.Dim('h32', min=1, max=4096 // MULTIPLE)
        dw = torch.export.Dim('w32', min=1, max=4096 // MULTIPLE)
        dynamic_shapes = {'image': {2: MULTIPLE * dh, 3: MULTIPLE * dw}}
    with torch.no_grad():
        outputs = module(image)
    names = [f'output{i}' for i in range(len(outputs))]
    kwargs = {} if opset is None else dict(opset_version=opset)
    with exportable_pooling(module):
        program = torch.onnx.export(module, (image,), dynamo=True, dynamic_shapes=dynamic_shapes,
                                    input_names=['image'], output_names=names, verbose=False, **kwargs)
    if program is None:
        raise ExportError('torch.onnx.export returned no program')
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    program.save(out)
    return program


def check_sizes(shape: tuple[int, int], dynamic: bool) -> list[tuple[int, int]]:
    """The export size, and with ``dynamic`` two other sizes (taller and wider)."""
    h, w = shape
    sizes = [(h, w)]
    if dynamic:
        sizes += [(h + 2 * MULTIPLE, max(MULTIPLE, w - MULTIPLE)), (max(MULTIPLE, h - MULTIPLE), w + 3 * MULTIPLE)]
    return sizes


def check(module: Exportable, path: str, sizes: list[tuple[int, int]], batch: int = 1,
          seed: int = 0) -> list[dict]:
    """Run ``path`` with onnxruntime (CPU) and ``module`` in eager mode on random images.

    Returns:
        list[dict]: per size, ``size``, ``outputs`` (shapes) and ``rel_err`` (the largest
        max-abs error over outputs, each divided by its output's largest magnitude).
    """
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    gen = torch.Generator().manual_seed(seed)
    results = []
    for h, w in sizes:
        image = torch.rand(batch, 3, h, w, generator=gen) * 255
        with torch.no_grad():
            expected = module(image)
        got = session.run(None, {session.get_inputs()[0].name: image.numpy()})
        if len(got) != len(expected):
            raise ExportError(f'onnxruntime returned {len(got)} outputs, the model {len(expected)}')
        rel = 0.0
        for e, g in zip(expected, got):
            g = torch.from_numpy(g)
            if tuple(g.shape) != tuple(e.shape):
                raise ExportError(f'at {h}x{w} onnxruntime gives shape {tuple(g.shape)}, '
                                  f'the model {tuple(e.shape)}')
            rel = max(rel, rel_err(g, e))
        results.append(dict(size=(h, w), outputs=[tuple(e.shape) for e in expected], rel_err=rel))
    return results
