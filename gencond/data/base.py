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

    def from_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 pixels (N, C, H, W), on any device, to the normalized space."""
        return self.normalize(pixels.float().div_(255))

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

    ``labels`` holds every label (cheap to keep even for ImageNet); ``pixels(indices)``
    returns the selected images as uint8 (N, C, H, W), what a DataLoader worker hands
    over (a quarter of float's bytes), and ``images(indices)`` the same images as a
    normalized float tensor. A subclass implements :meth:`pixels_within`.
    """

    info: DatasetInfo
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def pixels_within(self, indices: torch.Tensor, members: torch.Tensor | None) -> torch.Tensor:
        """``pixels(indices)`` read for a view holding only ``members`` (None: the whole set):
        a set that may stand one image in for another (:class:`LazyImageSet`) takes the
        stand-in from these, so a training view never borrows a held-out image."""
        raise NotImplementedError

    def pixels(self, indices: torch.Tensor) -> torch.Tensor:
        return self.pixels_within(indices, None)

    def images(self, indices: torch.Tensor) -> torch.Tensor:
        return self.info.from_pixels(self.pixels(indices))

    def images_within(self, indices: torch.Tensor, members: torch.Tensor | None) -> torch.Tensor:
        return self.info.from_pixels(self.pixels_within(indices, members))

    def images_on(self, indices: torch.Tensor, device: torch.device) -> torch.Tensor:
        """``images(indices)`` on ``device``, normalized there: a GPU gets uint8 (a quarter of
        float's bytes) and the host CPU only reads (on a CPU, the same as ``images``)."""
        return self.info.from_pixels(self.pixels(indices).to(device, non_blocking=True))

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images(indices), self.labels[indices]

    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.labels, minlength=self.info.num_classes)


class TensorImageSet(ImageSet):
    """Images held in memory as uint8 (N, C, H, W); normalized on access."""

    def __init__(self, info: DatasetInfo, pixels: torch.Tensor, labels: torch.Tensor):
        if pixels.dtype != torch.uint8 or pixels.dim() != 4:
            raise ValueError("pixels must be a uint8 tensor of shape (N, C, H, W)")
        self.info, self.array, self.labels = info, pixels, labels.long()

    def pixels_within(self, indices: torch.Tensor, members: torch.Tensor | None) -> torch.Tensor:
        return self.array[indices]


class UnreadableImage(GencondError):
    """An image file that cannot be decoded (raised by a :class:`LazyImageSet`'s loader)."""


class PathTable(Sequence[str]):
    """File paths held as a few numpy arrays. Files are grouped by folder; a folder keeps, once,
    its path with the start its file names share and the end they share (ImageNet's
    ``n01440764/`` + ``n01440764_`` and ``.JPEG``), and each file its folder's number (int32)
    and the rest of its name, in one byte buffer with offsets (int32 while they fit). 1.28 M
    ImageNet-style paths took 11 bytes a file (14.4 MB), against about 105 bytes for each
    short Python string in a list (135 MiB). Arrays also keep forked DataLoader workers from
    copying the index page by page, as reference counting does to a list of strings they share."""

    def __init__(self, paths: Sequence[str]):
        members: dict[str, list[int]] = {}
        for i, path in enumerate(paths):
            members.setdefault(path[:path.rfind(os.sep) + 1], []).append(i)  # a bare name's folder is ""
        self.folder_ids = np.empty(len(paths), dtype=np.int32)
        self.heads, self.tails, middles = [], [], [b""] * len(paths)
        for number, (folder, indices) in enumerate(members.items()):
            names = [paths[i][len(folder):] for i in indices]
            start = os.path.commonprefix(names)
            end = os.path.commonprefix([name[len(start):][::-1] for name in names])[::-1]
            self.heads.append(folder + start)
            self.tails.append(end)
            self.folder_ids[indices] = number
            for i, name in zip(indices, names):
                middles[i] = os.fsencode(name[len(start):len(name) - len(end)])  # names that are not UTF-8 survive
        self.bytes = np.frombuffer(b"".join(middles), dtype=np.uint8)
        self.offsets = np.zeros(len(middles) + 1, dtype=np.int32 if len(self.bytes) < 2**31 else np.int64)
        np.cumsum([len(middle) for middle in middles], out=self.offsets[1:])

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> str:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        folder = self.folder_ids[index]
        middle = os.fsdecode(self.bytes[self.offsets[index]:self.offsets[index + 1]].tobytes())
        return self.heads[folder] + middle + self.tails[folder]

    @property
    def nbytes(self) -> int:
        """The arrays' bytes and the folders' strings' (as Python holds them)."""
        strings = sum(sys.getsizeof(text) for text in self.heads + self.tails)
        return self.bytes.nbytes + self.offsets.nbytes + self.folder_ids.nbytes + strings


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

    def pixels_within(self, indices: torch.Tensor, members: torch.Tensor | None) -> torch.Tensor:
        if self.workers <= 1:
            return torch.stack([self._read(i, members) for i in indices.tolist()])
        with ThreadPoolExecutor(self.workers) as pool:
            return torch.stack(list(pool.map(lambda i: self._read(i, members), indices.tolist())))

    def load_file(self, index: int) -> torch.Tensor:
        """The image of file ``index`` (uint8 C, H, W), or :class:`UnreadableImage`: no stand-in."""
        return self._load(self.paths[index])

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

    def pixels_within(self, indices: torch.Tensor, members: torch.Tensor | None) -> torch.Tensor:
        within = self.indices if members is None else self.indices[members]
        return self.base.pixels_within(self.indices[indices], within)


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
