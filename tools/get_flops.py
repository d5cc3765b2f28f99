#!/usr/bin/env python
"""Parameters and FLOPs of a model built from a config: the whole model and its backbone alone.

    python tools/get_flops.py configs/mila_t_in1k.py                       # 224 x 224
    python tools/get_flops.py configs/mask_rcnn_mila_t_1x.py --shape 1280 800
    python tools/get_flops.py configs/upernet_mila_b_512x512_160k_ade20k.py --shape 512 2048

FLOPs follow fvcore's convention, which the paper uses: one multiply-add is one FLOP, and only
matrix products, convolutions, normalisations and a few pooling/upsampling ops are counted
(element-wise ops count 0); MILA's linear attention counts ``B * N * C * (2 d + 1)`` per call. How
they are counted: ``mmmila/bench/flops.py``.

``--shape H W`` is the input height and width (one number: a square). Detectors and segmentors run
their ``tensor`` mode (detectors: RPN + RoI heads on the RPN's proposals, as mmdet's own tool does),
classifiers their logits.
"""
from __future__ import annotations

import warnings

# setuptools' "pkg_resources is deprecated" notice, raised when mmengine and mmcv are imported (once per
# process): nothing the user can act on. Filtered here, in the tool, before those imports.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)

import argparse
import sys

from mmmila.bench.flops import count, format_report
from mmmila.bench.models import build_model, load_config


def parse_args(argv=None):
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='config file')
    parser.add_argument('--shape', type=int, nargs='+', default=[224],
                        help='input size: H W, or one number for a square (default 224)')
    parser.add_argument('--batch', type=int, default=1, help='batch size (default 1)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={}, metavar='KEY=VALUE',
                        help='override config entries, e.g. model.backbone.drop_path_rate=0')
    args = parser.parse_args(argv)
    if len(args.shape) not in (1, 2) or min(args.shape) < 32:
        parser.error(f'--shape takes H W or one size, each >= 32; got {args.shape}')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    height, width = (args.shape * 2)[:2]
    cfg = load_config(args.config, args.cfg_options)
    model = build_model(cfg)
    result = count(model, height, width, args.batch)
    print(format_report(result, args.config, model, height, width))
    return 0


if __name__ == '__main__':
    sys.exit(main())
