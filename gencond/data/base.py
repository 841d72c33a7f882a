"""Labelled image collections and what every method needs to know about them."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
import torch

from gencond.errors import GencondError


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is: its name, shape, classes and normalization statistics."""

    name: str
    channels: int
    image_size: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DatasetInfo:
        return cls(
            name=str(d["name"]),
            channels=int(d["channels"]),
            image_size=int(d["image_size"]),
            class_names=tuple(str(c) for c in d["class_names"]),
            mean=tuple(float(m) for m in d["mean"]),
            std=tuple(float(s) for s in d["std"]),
        )

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] to the normalized space networks are trained in."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized images back to [0, 1] (not clamped)."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return x * std + mean

    def from_generator_range(self, x: torch.Tensor) -> torch.Tensor:
        """Generator output in [-1, 1] (tanh) to the normalized space."""
        return self.normalize((x + 1) / 2)

    def to_generator_range(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized images to the generators' [-1, 1] range."""
        return self.denormalize(x) * 2 - 1


class ImageSet:
    """A labelled image collection addressed by index.

    ``labels`` holds every label (cheap to keep even for ImageNet); ``images(indices)``
    returns the selected images as a normalized float tensor (N, C, H, W).
    """

    info: DatasetInfo
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def images(self, indices: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def images_within(self, indices: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
        """``images(indices)`` read for a view holding only ``members``: a set that may
        stand one image in for another (:class:`LazyImageSet`) takes the stand-in from
        these, so a training view never borrows a held-out image."""
        return self.images(indices)

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images(indices), self.labels[indices]

    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.labels, minlength=self.info.num_classes)


class TensorImageSet(ImageSet):
    """Images held in memory as uint8 (N, C, H, W); normalized on access."""

    def __init__(self, info: DatasetInfo, pixels: torch.Tensor, labels: torch.Tensor):
        if pixels.dtype != torch.uint8 or pixels.dim() != 4:
            raise ValueError("pixels must be a uint8 tensor of shape (N, C, H, W)")
        self.info, self.pixels, self.labels = info, pixels, labels.long()

    def images(self, indices: torch.Tensor) -> torch.Tensor:
        return self.info.normalize(self.pixels[indices].float().div_(255))


class UnreadableImage(GencondError):
    """An image file that cannot be decoded (raised by a :class:`LazyImageSet`'s loader)."""


class PathTable(Sequence[str]):
    """File paths held as one byte buffer and offsets after their common folder: the path
    after that folder + 8 bytes a file, against ~105 bytes for a short Python string in a
    list (1.28 M ImageNet-style paths: 44 MiB instead of 135 MiB per process). Two numpy
    arrays also keep forked DataLoader workers from copying the index page by page, as
    reference counting does to a list of strings they share."""

    def __init__(self, paths: Sequence[str]):
        paths = list(paths)
        cut = os.path.commonprefix(paths).rfind(os.sep) + 1  # the prefix up to its last separator
        self.root = paths[0][:cut] if paths else ""
        encoded = [os.fsencode(path[cut:]) for path in paths]  # names that are not UTF-8 survive
        self.bytes = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=self.offsets[1:])

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> str:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        return self.root + os.fsdecode(self.bytes[self.offsets[index]:self.offsets[index + 1]].tobytes())

    @property
    def nbytes(self) -> int:
        return self.bytes.nbytes + self.offsets.nbytes + len(self.root)


class LazyImageSet(ImageSet):
    """Images read from files on access (ImageNet-scale data), decoded in threads.

    A file that cannot be decoded does not end a run that may have days behind it: it is
    skipped and counted (``unreadable``, one line on stderr the first time), and the next
    readable image of the same class, in file order, stands in (within the view being read,
    see :meth:`ImageSet.images_within`), so batches keep their size and labels. Each process
    (and DataLoader worker) counts what it met itself. Errors of the file system itself
    (a missing file, a lost mount) are not decoding errors: they end the run."""

    def __init__(self, info: DatasetInfo, paths: Sequence[str], labels: torch.Tensor, load: Callable, workers: int = 8):
        self.info, self.paths, self.labels, self._load, self.workers = info, PathTable(paths), labels.long(), load, workers
        self.unreadable: set[str] = set()
        self._lock = threading.Lock()

    def images(self, indices: torch.Tensor) -> torch.Tensor:
        return self.images_within(indices, None)

    def images_within(self, indices: torch.Tensor, members: torch.Tensor | None) -> torch.Tensor:
        with ThreadPoolExecutor(self.workers) as pool:
            pixels = torch.stack(list(pool.map(lambda i: self._read(i, members), indices.tolist())))
        return self.info.normalize(pixels.float().div_(255))

    def _read(self, index: int, members: torch.Tensor | None) -> torch.Tensor:
        label, same_class = self.labels[index], None
        for _ in range(len(self.paths)):
            path = self.paths[index]
            if path not in self.unreadable:
                try:
                    return self._load(path)
                except UnreadableImage as err:
                    self._count(path, err)
            if same_class is None:
                pool = torch.arange(len(self.paths)) if members is None else members.sort().values
                same_class = pool[self.labels[pool] == label].tolist()
            index = same_class[(same_class.index(index) + 1) % len(same_class)]
            if all(self.paths[i] in self.unreadable for i in same_class):
                break
        raise GencondError(f"{self.info.name}: no image of class {self.info.class_names[int(label)]} "
                           f"can be read ({len(self.unreadable)} unreadable files so far)")

    def _count(self, path: str, err: UnreadableImage) -> None:
        with self._lock:
            if path not in self.unreadable:
                self.unreadable.add(path)
                sys.stderr.write(f"gencond: skipped {err} ({len(self.unreadable)} unreadable so far); "
                                 "the next image of its class stands in\n")


class SubsetImageSet(ImageSet):
    """The images of ``base`` at ``indices`` (a view: nothing is copied)."""

    def __init__(self, base: ImageSet, indices: torch.Tensor):
        self.base, self.indices = base, indices.long()
        self.info, self.labels = base.info, base.labels[self.indices]

    def images(self, indices: torch.Tensor) -> torch.Tensor:
        return self.base.images_within(self.indices[indices], self.indices)

    def images_within(self, indices: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
        return self.base.images_within(self.indices[indices], self.indices[members])


@dataclass
class DatasetSplits:
    """The training and test split of one dataset, and optionally a validation split
    carved from the training data (:func:`gencond.data.sampler.carve_validation`): what
    model selection may read, since the test split is read only by the final evaluation."""

    train: ImageSet
    test: ImageSet
    validation: ImageSet | None = None

    @property
    def info(self) -> DatasetInfo:
        return self.train.info
