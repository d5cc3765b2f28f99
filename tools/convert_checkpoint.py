#!/usr/bin/env python
"""Convert a MILA checkpoint between the authors' format and mmmila's own.

    python tools/convert_checkpoint.py MLLA_T.pth mila_t_mmmila.pth            # authors' -> mmmila
    python tools/convert_checkpoint.py mila_t_mmmila.pth MLLA_T.pth --to authors

mmmila's format is mmpretrain's classifier layout (``backbone.*``, ``head.fc.*``) under
``state_dict``; it loads with ``init_cfg=dict(type='Pretrained', checkpoint=...)`` in every task and
with ``load_from`` in mmpretrain. The authors' format (their released ``MLLA_{T,S,B}.pth``) is
``{'model': <classifier state dict>}``; the key mapping is ``mmmila/checkpoint/keys.py``.
Only the weights are written (optimizer, EMA and config entries of a training file are dropped).
"""
from __future__ import annotations

import warnings

# setuptools' "pkg_resources is deprecated" notice, raised when mmengine and mmcv are imported (once per
# process): nothing the user can act on. Filtered here, in the tool, before those imports.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)

import argparse
import sys
from pathlib import Path

import torch

from mmmila.checkpoint.keys import authors_to_mmmila, extract_state_dict, is_authors_format, mmmila_to_authors
from mmmila.checkpoint.reading import load_checkpoint_file


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='checkpoint to read')
    parser.add_argument('dst', help='file to write (never overwrites unless --force)')
    parser.add_argument('--to', choices=('mmmila', 'authors'), default='mmmila', help='target format')
    parser.add_argument('--img-size', type=int, default=224,
                        help='input size of the rope buffers written with --to authors (default 224)')
    parser.add_argument('--force', action='store_true', help='overwrite dst if it exists')
    return parser.parse_args(argv)


def convert(src: str, to: str, img_size: int = 224) -> dict:
    """Read ``src`` and return the checkpoint dict in the ``to`` format."""
    state_dict = extract_state_dict(load_checkpoint_file(src, map_location='cpu'))
    if to == 'mmmila':
        if not is_authors_format(state_dict):
            raise ValueError(f"{src} is not in the authors' MILA format (no patch_embed.conv1.conv.weight key)")
        return {'state_dict': authors_to_mmmila(state_dict), 'meta': {'converted_from': 'authors'}}
    if is_authors_format(state_dict):
        raise ValueError(f"{src} is already in the authors' format")
    return {'model': mmmila_to_authors(state_dict, img_size=img_size)}


def main(argv=None) -> int:
    args = parse_args(argv)
    dst = Path(args.dst)
    if dst.exists() and not args.force:
        print(f'convert_checkpoint: {dst} exists; pass --force to overwrite it', file=sys.stderr)
        return 1
    try:
        out = convert(args.src, args.to, args.img_size)
    except (ValueError, OSError, RuntimeError) as err:
        print(f'convert_checkpoint: {err}', file=sys.stderr)
        return 1
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, dst)
    weights = out.get('state_dict', out.get('model'))
    print(f'convert_checkpoint: wrote {len(weights)} tensors in the {args.to} format to {dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
