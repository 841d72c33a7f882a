"""Named datasets, registered with a decorator, loaded by one call."""

from __future__ import annotations

from pathlib import Path
from collections.abc import Callable

from gencond.data.base import DatasetSplits
from gencond.errors import GencondError

DEFAULT_DATASET = "digits"

# name -> loader(root, download, image_size) -> DatasetSplits
_LOADERS: dict[str, Callable[..., DatasetSplits]] = {}


def register_dataset(name: str):
    def decorator(fn: Callable[..., DatasetSplits]):
        _LOADERS[name] = fn
        return fn

    return decorator


def list_datasets() -> list[str]:
    return sorted(_LOADERS) + ["npz:PATH"]


def load_dataset(
    name: str = DEFAULT_DATASET,
    root: str | Path = "data",
    download: bool = False,
    image_size: int | None = None,
) -> DatasetSplits:
    """Load a dataset's training and test split by name.

    ``name`` is a registered name (see :func:`list_datasets`) or ``npz:PATH`` for an
    array file of one's own. Nothing is downloaded unless ``download`` is true;
    ``image_size`` only applies to the ImageFolder datasets (tinyimagenet, imagenet).
    """
    if name.startswith("npz:"):
        from gencond.data.sources import load_npz

        return load_npz(Path(name[4:]))
    if name not in _LOADERS:
        raise GencondError(f"unknown dataset {name!r}; choose one of {', '.join(list_datasets())}")
    return _LOADERS[name](Path(root), download=download, image_size=image_size)
