"""Datasets: named torchvision datasets, ImageFolder roots, npz array files, prepared folders
(``gencond prepare``) and the bundled digits (the embedded default), each with its shape,
classes and normalization."""

from gencond.data import prepared, sources  # noqa: F401  (registers the datasets)
from gencond.data.base import (
    DatasetInfo,
    DatasetSplits,
    ImageSet,
    LazyImageSet,
    TensorImageSet,
)
from gencond.data.config import DataConfig
from gencond.data.prepared import PreparedImageSet, prepare
from gencond.data.registry import (
    DEFAULT_DATASET,
    list_datasets,
    load_dataset,
    register_dataset,
)
from gencond.data.sampler import ClassSampler, check_ipc, random_subset

__all__ = [
    "DEFAULT_DATASET",
    "ClassSampler",
    "DataConfig",
    "DatasetInfo",
    "DatasetSplits",
    "ImageSet",
    "LazyImageSet",
    "PreparedImageSet",
    "TensorImageSet",
    "check_ipc",
    "list_datasets",
    "load_dataset",
    "prepare",
    "random_subset",
    "register_dataset",
]
