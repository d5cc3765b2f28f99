"""Write a small synthetic dataset in ADE20K's layout, for tests and the short demo training run.

Usage: python tools/data/make_toy_ade.py data/ade_toy/ADEChallengeData2016 --train 40 --val 8

What is drawn and the folder layout: ``mmmila.datasets.toy_ade`` (the tests import it from there).
"""
from __future__ import annotations

import argparse
import logging

from mmmila.datasets.toy_ade import make_toy_ade


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out', help='dataset root to create, e.g. data/ade_toy/ADEChallengeData2016')
    parser.add_argument('--train', type=int, default=40, help='training images (default 40)')
    parser.add_argument('--val', type=int, default=8, help='validation images (default 8)')
    parser.add_argument('--test', type=int, default=4, help='unlabelled test images (default 4)')
    parser.add_argument('--height', type=int, default=96, help='image height (default 96)')
    parser.add_argument('--width', type=int, default=128, help='image width (default 128)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default 0)')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    out = make_toy_ade(args.out, args.train, args.val, args.test, args.height, args.width, args.seed)
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    logging.getLogger(__name__).info(
        'toy ADE20K set written to %s: %d training, %d validation, %d test images of %dx%d', out,
        args.train, args.val, args.test, args.height, args.width)


if __name__ == '__main__':
    main()
