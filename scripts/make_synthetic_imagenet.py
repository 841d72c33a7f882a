"""Write a synthetic stand-in for ImageNet-1K in its real layout (JPEG files in
train/<wnid>/ and val/<wnid>/, 1,000 classes, a few images each), for the data-path tests
and measurements; gencond reads it as ``--dataset imagenet --data-root ROOT``.

    python scripts/make_synthetic_imagenet.py --root runs/synthetic_imagenet --classes 1000 --train-per-class 3
"""

from __future__ import annotations

import time

from gencond.cli import guarded
from gencond.config import OneLineParser
from gencond.data.synthetic import write_synthetic_imagenet


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="folder to write train/ and val/ into")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--train-per-class", type=int, default=3)
    parser.add_argument("--val-per-class", type=int, default=1)
    parser.add_argument("--size", type=int, default=80, help="side of the square JPEGs, in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--unreadable", type=int, default=0, help="training files written as broken JPEGs")
    args = parser.parse_args()
    start = time.perf_counter()
    written = write_synthetic_imagenet(args.root, args.classes, args.train_per_class, args.val_per_class,
                                       args.size, args.seed, args.unreadable)
    print(f"wrote {written['train_images']} training and {written['val_images']} validation JPEGs of "
          f"{args.size}x{args.size} in {written['classes']} classes under {args.root} "
          f"({written['unreadable']} unreadable) in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    raise SystemExit(guarded(main, "make_synthetic_imagenet.py"))
