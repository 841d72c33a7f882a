"""Labelled image collections and what every method needs to know about them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from collections.abc import Callable, Sequence

import torch


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


class LazyImageSet(ImageSet):
    """Images read from files on access (ImageNet-scale data), decoded in threads."""

    def __init__(self, info: DatasetInfo, paths: Sequence[str], labels: torch.Tensor, load: Callable, workers: int = 8):
        self.info, self.paths, self.labels, self._load, self.workers = info, list(paths), labels.long(), load, workers

    def images(self, indices: torch.Tensor) -> torch.Tensor:
        paths = [self.paths[i] for i in indices.tolist()]
        with ThreadPoolExecutor(self.workers) as pool:
            pixels = torch.stack(list(pool.map(self._load, paths)))
        return self.info.normalize(pixels.float().div_(255))


class SubsetImageSet(ImageSet):
    """The images of ``base`` at ``indices`` (a view: nothing is copied)."""

    def __init__(self, base: ImageSet, indices: torch.Tensor):
        self.base, self.indices = base, indices.long()
        self.info, self.labels = base.info, base.labels[self.indices]

    def images(self, indices: torch.Tensor) -> torch.Tensor:
        return self.base.images(self.indices[indices])


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
