#!/usr/bin/env python
"""Export a model of a config to ONNX (dynamo exporter) and check it with onnxruntime.

    python tools/deploy/export_onnx.py configs/upernet_mila_t_512x512_160k_ade20k.py CKPT \\
        --out upernet_mila_t.onnx --shape 512 512 --dynamic
    python tools/deploy/export_onnx.py configs/mask_rcnn_mila_t_1x.py --out feats.onnx --shape 800 1280
    python tools/deploy/export_onnx.py configs/mila_t_in1k.py --part backbone --out mila_t.onnx

``--part``: ``model`` (a segmentor's or classifier's logits), ``features`` (a detector's backbone +
neck; the default for detectors) or ``backbone``. ``--dynamic`` makes H and W symbolic (multiples
of 32). After exporting, the file is run by onnxruntime on CPU and compared with the PyTorch model in
eager mode on random images, at the export size and, with ``--dynamic``, at two other sizes; the
tool fails when the largest error exceeds ``--rtol`` times the largest output magnitude.

What is exported and checked: ``mmmila/deploy/onnx_export.py`` and docs/deploy.md.
"""
import argparse
import sys
import warnings

# setuptools' "pkg_resources is deprecated" notice, raised when mmengine and mmcv are imported (once per
# process): nothing the user can act on. Filtered here, in the tool, before those imports.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)

from mmengine.config import DictAction  # noqa: E402

from mmmila.deploy.onnx_export import (MULTIPLE, PARTS, Exportable, ExportError, check,  # noqa: E402
                                       check_sizes, default_part, export, load_model)

TOOL = 'tools/deploy/export_onnx.py'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint to load (default: the config\'s init)')
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    parser.add_argument('--shape', type=int, nargs='+', default=[512],
                        help='input H W, or one number for a square (default 512)')
    parser.add_argument('--dynamic', action='store_true',
                        help=f'symbolic H and W (multiples of {MULTIPLE}); checked at two other sizes')
    parser.add_argument('--part', choices=PARTS, help='what to export (default: model; features for detectors)')
    parser.add_argument('--batch', type=int, default=1, help='batch size of the graph (default 1)')
    parser.add_argument('--opset', type=int, help='ONNX opset (default: the exporter\'s)')
    parser.add_argument('--rtol', type=float, default=1e-4,
                        help='largest accepted error relative to the output magnitude (default 1e-4)')
    parser.add_argument('--no-check', action='store_true', help='export only, skip onnxruntime')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={}, metavar='KEY=VALUE',
                        help='override config entries')
    args = parser.parse_args(argv)
    if len(args.shape) not in (1, 2) or min(args.shape) < MULTIPLE:
        parser.error(f'--shape takes H W or one size, each >= {MULTIPLE}; got {args.shape}')
    if args.batch < 1:
        parser.error(f'--batch must be >= 1, got {args.batch}')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    shape = tuple((args.shape * 2)[:2])
    try:
        model, _ = load_model(args.config, args.checkpoint, args.cfg_options)
        module = Exportable(model, args.part or default_part(model)).eval()
        export(module, args.out, shape, args.dynamic, args.batch, args.opset)
        print(f'export_onnx: wrote {args.out} ({type(model).__name__}, part {module.part}, '
              f'{"dynamic H W" if args.dynamic else "static"} from {shape[0]}x{shape[1]})')
        if args.no_check:
            return 0
        results = check(module, args.out, check_sizes(shape, args.dynamic), args.batch)
    except ExportError as err:
        sys.exit(f'{TOOL}: error: {err}')
    worst = 0.0
    for r in results:
        print(f'  onnxruntime vs eager at {r["size"][0]}x{r["size"][1]}: rel err {r["rel_err"]:.2e}, '
              f'outputs {r["outputs"]}')
        worst = max(worst, r['rel_err'])
    if worst > args.rtol:
        sys.exit(f'{TOOL}: error: onnxruntime differs from eager by {worst:.2e} (> --rtol {args.rtol:.0e})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
