"""Class-balanced access to a labelled image set."""

from __future__ import annotations

import torch

from gencond.data.base import ImageSet, SubsetImageSet
from gencond.errors import GencondError


class ClassSampler:
    """Random real images of chosen classes, drawn without replacement within a call.

    Every matching method (DM, DC/DSA, DiM's logits matching) compares a synthetic batch
    of some class with a real batch of the same class; this returns those real batches,
    for one class or many at once, from one seeded generator.
    """

    def __init__(self, images: ImageSet, seed: int = 0, generator: torch.Generator | None = None):
        self.source = images
        labels = images.labels
        self.counts = torch.bincount(labels, minlength=images.info.num_classes)
        self.by_class = torch.argsort(labels, stable=True)
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)

    def indices(self, classes: torch.Tensor | list[int], n: int) -> torch.Tensor:
        """``n`` random dataset indices per class (fewer when a class has fewer), grouped
        by class in the order given. Vectorised over classes: random keys, top-n per row."""
        classes = torch.as_tensor(classes, dtype=torch.long)
        counts = self.counts[classes]
        if (counts == 0).any():
            empty = classes[counts == 0].tolist()
            raise GencondError(f"class(es) {empty} have no images in {self.source.info.name}")
        width = int(counts.max())
        keys = torch.rand(len(classes), width, generator=self.generator)
        keys[torch.arange(width).view(1, -1) >= counts.view(-1, 1)] = float("inf")
        take = min(n, width)
        order = keys.topk(take, dim=1, largest=False).indices
        valid = order < counts.view(-1, 1)
        positions = self.starts[classes].view(-1, 1) + order
        return self.by_class[positions[valid]]

    def sample(self, classes: torch.Tensor | list[int], n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Real images and labels: ``n`` per class, grouped by class."""
        return self.source.batch(self.indices(classes, n))

    def indices_aligned(self, labels: torch.Tensor) -> torch.Tensor:
        """One real image index per entry of ``labels`` (same class, same position).
        Labels grouped by class with equal counts get distinct images per class; any
        other labels are drawn with replacement."""
        classes, counts = torch.unique_consecutive(labels, return_counts=True)
        k = int(counts[0])
        if len(set(classes.tolist())) == len(classes) and bool((counts == k).all()) and bool((self.counts[classes] >= k).all()):
            return self.indices(classes, k)
        if (self.counts[labels] == 0).any():
            raise GencondError(f"some of the classes {sorted(set(labels.tolist()))} have no images")
        offsets = (torch.rand(len(labels), generator=self.generator) * self.counts[labels]).long()
        return self.by_class[self.starts[labels] + offsets]

    def sample_aligned(self, labels: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        """Real images whose labels equal ``labels`` position by position (on ``device``,
        normalized there, when given)."""
        indices = self.indices_aligned(labels)
        return self.source.images(indices) if device is None else self.source.images_on(indices, device)

    def sample_class(self, c: int, n: int) -> torch.Tensor:
        """``n`` real images of class ``c``."""
        return self.source.images(self.indices([c], n))


def check_ipc(images: ImageSet, ipc: int) -> None:
    """A subset of ``ipc`` distinct images per class needs that many in every class."""
    if ipc <= 0:
        raise GencondError(f"images per class must be positive, got {ipc}")
    counts = images.class_counts()
    smallest = int(counts.argmin())
    if ipc > int(counts[smallest]):
        raise GencondError(
            f"IPC {ipc} is larger than class {smallest} ({images.info.class_names[smallest]}) of "
            f"{images.info.name}, which has {int(counts[smallest])} training images"
        )


def random_subset(images: ImageSet, ipc: int, seed: int = 0) -> torch.Tensor:
    """Dataset indices of ``ipc`` random real images per class (seeded), grouped by class."""
    check_ipc(images, ipc)
    return ClassSampler(images, seed).indices(torch.arange(images.info.num_classes), ipc)


def carve_validation(train: ImageSet, per_class: int, seed: int) -> tuple[ImageSet, ImageSet]:
    """(training split without the validation images, validation split): ``per_class``
    random images of every class (seeded) held out of ``train``; the two never overlap."""
    counts = train.class_counts()
    if per_class <= 0 or per_class >= int(counts.min()):
        raise GencondError(f"a validation split of {per_class} images per class must be positive and leave training "
                           f"images in every class (the smallest class of {train.info.name} has {int(counts.min())})")
    held = random_subset(train, per_class, seed)
    keep = torch.ones(len(train), dtype=torch.bool)
    keep[held] = False
    return SubsetImageSet(train, torch.nonzero(keep).squeeze(1)), SubsetImageSet(train, held)
