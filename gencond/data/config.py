"""The data fields every job shares: which dataset, where it lives, its size and the seed."""

from __future__ import annotations

from dataclasses import dataclass, field

from gencond.data.base import DatasetSplits
from gencond.data.registry import DEFAULT_DATASET, load_dataset
from gencond.data.sampler import carve_validation
from gencond.errors import GencondError


@dataclass
class DataConfig:
    """Base of the condense, generator-training and evaluation configs (their YAML keys
    and flags stay flat: ``dataset``, ``data_root``, ...)."""

    dataset: str = field(default=DEFAULT_DATASET, metadata={"help": "dataset name or npz:PATH"})
    data_root: str = field(default="data", metadata={"help": "where named datasets live"})
    download: bool = field(default=False, metadata={"help": "allow torchvision to download the dataset"})
    image_size: int = field(default=0, metadata={"help": "side of the images: ImageFolder datasets are resized to "
                                                         "it, any other must have it (0 = the dataset's own)"})
    seed: int = field(default=0, metadata={"help": "seeds every random choice of the run (and carves the validation "
                                                   "split)"})
    validation_per_class: int = field(default=0, metadata={"help": "training images per class held out as a validation "
                                                                   "split for model selection (0 = none)"})

    def load_splits(self) -> DatasetSplits:
        """The dataset's splits; with ``validation_per_class``, a validation split carved from
        the training split (seeded by ``seed``) and the training split without it."""
        splits = load_dataset(self.dataset, self.data_root, self.download, self.image_size or None)
        if self.image_size and splits.info.image_size != self.image_size:
            side = splits.info.image_size
            raise GencondError(f"{self.dataset} holds {side}x{side} images, not image_size {self.image_size} (only "
                               "ImageFolder datasets are resized as read; prepare another folder, or set image_size "
                               f"to 0 or {side})")
        if self.validation_per_class:
            train, validation = carve_validation(splits.train, self.validation_per_class, self.seed)
            splits = DatasetSplits(train, splits.test, validation)
        return splits
