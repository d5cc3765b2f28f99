"""Write a small COCO-format instance segmentation set of drawn shapes (the demo's data).

Usage: ``python tools/data/make_toy_coco.py OUT [--num-train 200] [--num-val 40] [--size 128]``

What is drawn and the folder layout: ``mmmila.datasets.toy_coco`` (the tests import it from there).
"""
from __future__ import annotations

import argparse

from mmmila.datasets.toy_coco import make_toy_coco


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out', help='output folder (data_root of the demo config)')
    parser.add_argument('--num-train', type=int, default=200, help='training images (default 200)')
    parser.add_argument('--num-val', type=int, default=40, help='validation images (default 40)')
    parser.add_argument('--size', type=int, default=128, help='image side in pixels (default 128)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default 0)')
    args = parser.parse_args(argv)
    paths = make_toy_coco(args.out, args.num_train, args.num_val, args.size, args.seed)
    for split, path in paths.items():
        print(f'{split}: {path}')


if __name__ == '__main__':
    main()
