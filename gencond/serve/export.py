"""Writing sampled sets: an ImageFolder tree of PNGs, or a condensed set file."""

from __future__ import annotations

import re
from pathlib import Path

from gencond.artifacts import CondensedSet
from gencond.errors import GencondError

FORMATS = ("png", "npz", "pt", "safetensors")


def class_folder(index: int, name: str, num_classes: int) -> str:
    """``007_horse``: the index prefix keeps ImageFolder's sorted order equal to the labels."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "class"
    return f"{index:0{len(str(num_classes - 1))}d}_{safe}"


def write_png_folders(condensed: CondensedSet, out: Path) -> Path:
    from torchvision.utils import save_image

    pixels = condensed.info.denormalize(condensed.images).clamp(0, 1)
    names, num_classes = condensed.info.class_names, condensed.info.num_classes
    counters: dict[int, int] = {}
    for image, label in zip(pixels, condensed.labels.tolist()):
        folder = out / class_folder(label, names[label], num_classes)
        folder.mkdir(parents=True, exist_ok=True)
        k = counters.get(label, 0)
        counters[label] = k + 1
        save_image(image, str(folder / f"{k:05d}.png"))
    return out


def write_sampled(condensed: CondensedSet, out: Path, fmt: str) -> Path:
    if fmt not in FORMATS:
        raise GencondError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "png":
        return write_png_folders(condensed, out)
    return condensed.save(out if out.suffix == f".{fmt}" else out.with_suffix(f".{fmt}"))
