"""Coreset selection: real images chosen per class."""

from __future__ import annotations

import torch

from gencond.data.base import ImageSet
from gencond.data.sampler import ClassSampler
from gencond.errors import GencondError
from gencond.methods import register_method


def check_ipc(images: ImageSet, ipc: int) -> None:
    """Selection needs ``ipc`` distinct images in every class."""
    if ipc <= 0:
        raise GencondError(f"images per class must be positive, got {ipc}")
    counts = images.class_counts()
    smallest = int(counts.argmin())
    if ipc > int(counts[smallest]):
        raise GencondError(
            f"IPC {ipc} is larger than class {smallest} ({images.info.class_names[smallest]}) of "
            f"{images.info.name}, which has {int(counts[smallest])} training images"
        )


@register_method("random", kind="selection")
def random_selection(images: ImageSet, ipc: int, seed: int = 0) -> torch.Tensor:
    """Random real images, ``ipc`` per class (seeded)."""
    check_ipc(images, ipc)
    return ClassSampler(images, seed).indices(torch.arange(images.info.num_classes), ipc)
