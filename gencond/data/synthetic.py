"""A synthetic stand-in for ImageNet-1K in its real layout on disk, for tests and data-path
measurements where the real data cannot be: ``train/<wnid>/<wnid>_<i>.JPEG`` and
``val/<wnid>/ILSVRC2012_val_<k>.JPEG`` (the validation images sorted into class folders, as
the usual preparation script leaves them), 1,000 classes by default, a few images each.

Each class has its own colour and stripe orientation and frequency, each image its own noise
and phase, so a network can learn the classes; the files are real JPEGs of a size the loader
resizes and crops, so decoding costs what it costs on ImageNet's files of that size."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gencond.errors import GencondError


def wnid(index: int) -> str:
    """A WordNet-style class folder name (``n`` and eight digits), unique per index."""
    return f"n{10_000_000 + index:08d}"


def synthetic_image(cls: int, item: int, size: int, seed: int) -> np.ndarray:
    """One ``size`` x ``size`` RGB image (uint8) of class ``cls``."""
    rng = np.random.default_rng([seed, cls, item])
    colour = np.random.default_rng([seed, cls]).uniform(40, 215, size=3)
    angle = math.pi * ((cls * 0.618034) % 1.0)
    freq = 2 + cls % 7
    yy, xx = np.mgrid[0:size, 0:size] / size
    stripes = np.sin(2 * math.pi * freq * (xx * math.cos(angle) + yy * math.sin(angle)) + rng.uniform(0, 2 * math.pi))
    pixels = colour + 40 * stripes[..., None] + rng.normal(0, 12, size=(size, size, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_synthetic_imagenet(root: str | Path, classes: int = 1000, train_per_class: int = 3, val_per_class: int = 1,
                             size: int = 80, seed: int = 0, unreadable: int = 0) -> dict:
    """Write the layout under ``root`` and return what was written. ``unreadable`` training
    files (the first image of the first classes) are written as broken JPEGs (a header
    cut short), the way a damaged download looks."""
    from PIL import Image

    if min(classes, train_per_class, val_per_class, size) <= 0 or not 0 <= unreadable <= classes:
        raise GencondError("classes, train_per_class, val_per_class and size must be positive and "
                           "unreadable between 0 and classes")
    root = Path(root)
    val_number = 0
    for cls in range(classes):
        name = wnid(cls)
        for split, count in (("train", train_per_class), ("val", val_per_class)):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for item in range(count):
                if split == "train":
                    path = folder / f"{name}_{item}.JPEG"
                else:
                    val_number += 1
                    path = folder / f"ILSVRC2012_val_{val_number:08d}.JPEG"
                image = Image.fromarray(synthetic_image(cls, item + (split == "val") * train_per_class, size, seed))
                image.save(path, format="JPEG", quality=90)
                if split == "train" and item == 0 and cls < unreadable:
                    path.write_bytes(path.read_bytes()[:200])
    return {"root": str(root), "classes": classes, "train_images": classes * train_per_class,
            "val_images": classes * val_per_class, "unreadable": unreadable, "size": size}
