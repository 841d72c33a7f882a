"""Named datasets, registered with a decorator, loaded by one call."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gencond.data.base import DatasetSplits
from gencond.errors import GencondError

DEFAULT_DATASET = "digits"

# name -> loader(root, download, image_size) -> DatasetSplits
_LOADERS: dict[str, Callable[..., DatasetSplits]] = {}
# prefix -> loader(path) -> DatasetSplits, for names like ``npz:PATH``
_PREFIX_LOADERS: dict[str, Callable[[Path], DatasetSplits]] = {}


def register_dataset(name: str):
    def decorator(fn: Callable[..., DatasetSplits]):
        _LOADERS[name] = fn
        return fn

    return decorator


def register_dataset_prefix(prefix: str):
    """Register a loader for dataset names ``PREFIX:PATH`` (a file or folder of one's own)."""

    def decorator(fn: Callable[[Path], DatasetSplits]):
        _PREFIX_LOADERS[prefix] = fn
        return fn

    return decorator


def list_datasets() -> list[str]:
    return sorted(_LOADERS) + [f"{prefix}:PATH" for prefix in sorted(_PREFIX_LOADERS)]


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
    prefix, sep, path = name.partition(":")
    if sep and prefix in _PREFIX_LOADERS:
        return _PREFIX_LOADERS[prefix](Path(path))
    if name not in _LOADERS:
        raise GencondError(f"unknown dataset {name!r}; choose one of {', '.join(list_datasets())}")
    return _LOADERS[name](Path(root), download=download, image_size=image_size)
