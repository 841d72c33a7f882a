"""The condensed set file: synthetic or selected images, their labels, and what made them.

One file holds

- ``images``: float32 (N, C, H, W) in the dataset's normalized space (pixel-space
  methods optimise there, so values may leave the [0, 1] range of real images);
- ``labels``: int64 (N,), and optionally ``soft_labels``: float32 (N, num_classes), a
  teacher's logits of each image (the set's config names the teacher);
- ``factor``: the multi-formation factor f (IDC): each stored image decodes into f^2
  training images (:mod:`gencond.data.formation`); 1 for every other method;
- metadata: the dataset description (name, channels, size, class names, normalization),
  the method and its configuration, and the gencond version.

It is written as safetensors (``.safetensors``, the default), as a ``.pt`` file of plain
tensors and strings that loads with ``torch.load(weights_only=True)``, or as NumPy
``.npz`` arrays (metadata as a JSON string, read with ``allow_pickle=False``); none of
the formats can carry code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gencond import __version__
from gencond.data.base import DatasetInfo
from gencond.errors import GencondError
from gencond.files import atomic_path, write_json

FORMAT = "gencond-condensed-set/1"
# A set too large for one file is a folder of shard files (each a condensed set) and this index.
SHARD_INDEX = "index.json"
SHARDS_FORMAT = "gencond-condensed-shards/1"


@dataclass
class CondensedSet:
    images: torch.Tensor
    labels: torch.Tensor
    info: DatasetInfo
    soft_labels: torch.Tensor | None = None
    method: str = "unknown"
    config: dict = field(default_factory=dict)
    factor: int = 1

    def __len__(self) -> int:
        return len(self.labels)

    def targets(self, soft: bool = False) -> torch.Tensor:
        """What a network is trained to predict: the labels, or (``soft``) the stored
        teacher logits, which a set sampled without a teacher does not have."""
        if not soft:
            return self.labels
        if self.soft_labels is None:
            raise GencondError(f"soft labels asked of a {self.method} set without a teacher's soft_labels "
                               "(sample it with a teacher: gencond sample --soft-labels)")
        return self.soft_labels

    def decoded(self, soft: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(training images, targets): the stored images decoded by multi-formation when
        ``factor`` > 1, with their targets (see :meth:`targets`) repeated to match."""
        from gencond.data.formation import decode, decode_labels, grey_pad

        return decode(self.images, self.factor, grey_pad(self.info)), decode_labels(self.targets(soft), self.factor)

    def images_per_class(self) -> torch.Tensor:
        """Stored images per class (the pixel budget; IDC trains on f^2 times as many)."""
        return torch.bincount(self.labels, minlength=self.info.num_classes)

    def validate(self, where: str) -> None:
        x, y, info = self.images, self.labels, self.info
        expected = (info.channels, info.image_size, info.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise GencondError(f"{where}: images have shape {tuple(x.shape)}, expected (N, {', '.join(map(str, expected))})")
        if y.dim() != 1 or len(y) != len(x):
            raise GencondError(f"{where}: {len(x)} images but labels of shape {tuple(y.shape)}")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= info.num_classes):
            raise GencondError(f"{where}: labels must lie in [0, {info.num_classes - 1}]")
        if not 1 <= self.factor <= x.shape[-1]:
            raise GencondError(f"{where}: multi-formation factor must be between 1 and the image side, got {self.factor}")
        if self.soft_labels is not None and tuple(self.soft_labels.shape) != (len(y), info.num_classes):
            raise GencondError(f"{where}: soft labels have shape {tuple(self.soft_labels.shape)}, expected ({len(y)}, {info.num_classes})")

    def check_matches(self, dataset: DatasetInfo, where: str) -> None:
        """Refuse to evaluate a set against a dataset of another shape or class count."""
        check_compatible(self.info, dataset, where)

    def _metadata(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "gencond_version": __version__,
            "info": json.dumps(self.info.to_dict()),
            "method": self.method,
            "config": json.dumps(self.config),
            "factor": str(self.factor),
        }

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {"images": self.images.detach().float().cpu().contiguous(), "labels": self.labels.long().cpu().contiguous()}
        if self.soft_labels is not None:
            tensors["soft_labels"] = self.soft_labels.detach().float().cpu().contiguous()
        return tensors

    def save(self, path: str | Path) -> Path:
        """Write atomically; ``.pt`` and ``.npz`` select those formats, anything else safetensors."""
        path = Path(path)
        self.validate(f"condensed set from {self.method}")
        with atomic_path(path) as tmp:
            if path.suffix == ".pt":
                torch.save({**self._tensors(), "metadata": self._metadata()}, tmp)
            elif path.suffix == ".npz":
                with open(tmp, "wb") as f:
                    np.savez(f, metadata=np.array(json.dumps(self._metadata())),
                             **{k: v.numpy() for k, v in self._tensors().items()})
            else:
                from safetensors.torch import save_file

                save_file(self._tensors(), str(tmp), metadata=self._metadata())
        return path

    @classmethod
    def load(cls, path: str | Path) -> CondensedSet:
        """Read a set file, or a folder of shards (its ``index.json``) as one set."""
        path = Path(path)
        if (path / SHARD_INDEX).is_file():
            return _load_shards(path)
        if not path.is_file():
            raise GencondError(f"no condensed set file at {path}")
        reader = {".pt": _read_pt, ".npz": _read_npz}.get(path.suffix, _read_safetensors)
        tensors, metadata = reader(path)
        if metadata.get("format") != FORMAT:
            raise GencondError(f"{path} is not a gencond condensed set (format {metadata.get('format')!r})")
        missing = {"images", "labels"} - set(tensors)
        if missing:
            raise GencondError(f"{path}: missing tensor(s) {', '.join(sorted(missing))}")
        if tensors["labels"].is_floating_point() or tensors["labels"].is_complex():
            raise GencondError(f"{path}: labels must be integers, got {tensors['labels'].dtype}")
        try:
            info = DatasetInfo.from_dict(json.loads(metadata["info"]))
            config = json.loads(metadata.get("config", "{}"))
            factor = int(metadata.get("factor", 1))
        except (KeyError, ValueError, TypeError) as err:
            raise GencondError(f"{path}: unreadable metadata ({err})") from None
        condensed = cls(
            images=tensors["images"].float(),
            labels=tensors["labels"].long(),
            info=info,
            soft_labels=tensors.get("soft_labels"),
            method=str(metadata.get("method", "unknown")),
            config=config,
            factor=factor,
        )
        condensed.validate(str(path))
        return condensed


def write_shard_index(path: Path, names: list[str], images: int, method: str, config: dict) -> None:
    write_json(path, {"format": SHARDS_FORMAT, "gencond_version": __version__, "images": images, "method": method,
                      "config": config, "shards": names})


def _load_shards(folder: Path) -> CondensedSet:
    try:
        index = json.loads((folder / SHARD_INDEX).read_text())
        names, images = [str(n) for n in index["shards"]], int(index["images"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise GencondError(f"{folder / SHARD_INDEX}: unreadable shard index ({err})") from None
    if index.get("format") != SHARDS_FORMAT or any("/" in n or "\\" in n for n in names):
        raise GencondError(f"{folder / SHARD_INDEX} is not a gencond shard index")
    shards = [CondensedSet.load(folder / name) for name in names]
    if not shards or sum(len(s) for s in shards) != images:
        raise GencondError(f"{folder}: the shards hold {sum(len(s) for s in shards)} images, the index says {images}")
    for shard in shards[1:]:
        check_compatible(shard.info, shards[0].info, str(folder))
    soft = [s.soft_labels for s in shards]
    return CondensedSet(torch.cat([s.images for s in shards]), torch.cat([s.labels for s in shards]), shards[0].info,
                        None if any(t is None for t in soft) else torch.cat(soft), method=str(index.get("method")),
                        config=index.get("config", {}), factor=shards[0].factor)


def check_compatible(mine: DatasetInfo, dataset: DatasetInfo, where: str) -> None:
    """Images described by ``mine`` can train networks for ``dataset``: same channels,
    size and number of classes."""
    a = (mine.channels, mine.image_size, mine.num_classes)
    b = (dataset.channels, dataset.image_size, dataset.num_classes)
    if a != b:
        raise GencondError(
            f"{where}: the set holds {a[0]}x{a[1]}x{a[1]} images of {a[2]} classes, "
            f"but {dataset.name} has {b[0]}x{b[1]}x{b[1]} images of {b[2]} classes"
        )


def _read_safetensors(path: Path) -> tuple[dict, dict]:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise GencondError(f"cannot read {path} as safetensors (truncated or not a condensed set): {err}") from None


def _read_pt(path: Path) -> tuple[dict, dict]:
    import pickle

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GencondError(f"cannot read {path} as a plain-tensor .pt file: {first}") from None
    if not isinstance(data, dict) or not isinstance(data.get("metadata"), dict):
        raise GencondError(f"{path} is not a gencond condensed set")
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    return tensors, data["metadata"]


def _read_npz(path: Path) -> tuple[dict, dict]:
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as npz:
            metadata = json.loads(str(npz["metadata"]))
            arrays = {k: npz[k] for k in npz.files if k != "metadata"}
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise GencondError(f"cannot read {path} as a condensed-set .npz (truncated or not a condensed set): {err}") from None
    if not isinstance(metadata, dict):
        raise GencondError(f"{path} is not a gencond condensed set")
    odd = [f"{k} ({a.dtype})" for k, a in arrays.items() if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool)]
    if odd:
        raise GencondError(f"{path}: arrays of numbers expected, got {', '.join(odd)}")
    return {k: torch.from_numpy(a) for k, a in arrays.items()}, metadata
