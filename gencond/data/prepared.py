"""Prepared datasets: images decoded once into uint8 arrays on disk (``gencond prepare``) and
read back as ``prepared:DIR``, with O(1) random access and no decoding.

A GPU step of DiM at 64x64 needs about 11,650 real images a second and a matching step ten
times that, while decoding JPEGs gives about 1,300 a second per core; a memory-mapped uint8
array is read at memory speed instead (``experiments/data_pipeline/``). ``prepare`` decodes
any dataset gencond reads (ImageFolder roots, torchvision layouts, ``npz:``) and image
datasets saved with Hugging Face ``datasets`` (``hf:PATH``).

The folder it writes::

    meta.json            written last (atomically): the dataset's info and each split's counts
    train/pixels.npy     uint8 (N, H, W, C), read memory-mapped
    train/labels.npy     int64 (N,)
    train/rows.npy       only where files were unreadable: the rows holding images
    train/skipped.txt    the unreadable files, "path<TAB>reason" a line, in row order
    test/...             the same for the test split (the source's validation images)

Each split is decoded in chunks of rows by forked worker processes, which write their rows
into ``pixels.npy`` and flush them before the main process appends the chunk to
``progress.jsonl``. A killed prepare run again with the same arguments decodes only the chunks
the log lacks (a chunk written but not logged is decoded again, to the same bytes), so the
finished folder is bitwise the one an uninterrupted run writes.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gencond.data.base import DatasetInfo, DatasetSplits, ImageSet, LazyImageSet, TensorImageSet, UnreadableImage
from gencond.data.registry import load_dataset, register_dataset_prefix
from gencond.data.sources import decode_image
from gencond.errors import GencondError
from gencond.files import atomic_path, output_lock, write_json
from gencond.runtime import forked_map

FORMAT = 1
CHUNK = 1024
SPLITS = ("train", "test")


class PreparedImageSet(ImageSet):
    """Images of a uint8 (N, H, W, C) array (a prepared split, memory-mapped), the rows
    ``rows`` of it where some were unreadable."""

    def __init__(self, info: DatasetInfo, array: np.ndarray, labels: torch.Tensor, rows: np.ndarray | None = None):
        self.info, self.array, self.rows = info, array, rows
        self.labels = labels.long() if rows is None else labels.long()[torch.from_numpy(rows)]

    def pixels_within(self, indices: torch.Tensor, members: torch.Tensor | None) -> torch.Tensor:
        rows = indices.numpy() if self.rows is None else self.rows[indices.numpy()]
        return torch.from_numpy(self.array[rows]).permute(0, 3, 1, 2).contiguous()


@register_dataset_prefix("prepared")
def load_prepared(path: Path) -> DatasetSplits:
    """``prepared:DIR``: the folder ``gencond prepare`` wrote."""
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        unfinished = any((path / split / "plan.json").is_file() for split in SPLITS)
        raise GencondError(f"prepared:{path}: " + ("its prepare has not finished; run the same gencond prepare "
                                                   "command again to complete it" if unfinished else
                                                   "no prepared dataset here (make one with gencond prepare)"))
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise GencondError(f"prepared:{path}: format {meta.get('format')} is not this gencond's ({FORMAT})")
    info = DatasetInfo.from_dict({**meta["info"], "name": f"prepared:{path}"})
    sets = []
    for split in SPLITS:
        folder = path / split
        rows = np.load(folder / "rows.npy") if (folder / "rows.npy").is_file() else None
        array = np.load(folder / "pixels.npy", mmap_mode="r")
        sets.append(PreparedImageSet(info, array, torch.from_numpy(np.load(folder / "labels.npy")), rows))
    return DatasetSplits(*sets)


# --- what prepare reads ---


@dataclass
class SplitSource:
    """One split to prepare: its labels, the shape of an image (H, W, C), and ``read(row)``,
    which gives row's image as uint8 (H, W, C) or raises :class:`UnreadableImage`."""

    labels: np.ndarray
    shape: tuple[int, int, int]
    read: Callable[[int], np.ndarray]
    name: Callable[[int], str]


def _set_source(images: ImageSet) -> SplitSource:
    if isinstance(images, LazyImageSet):
        c, s = images.info.channels, images.info.image_size
        return SplitSource(images.labels.numpy(), (s, s, c), lambda row: images.load_file(row).permute(1, 2, 0).numpy(),
                           lambda row: images.paths[row])
    if isinstance(images, TensorImageSet):
        hwc = images.array.permute(0, 2, 3, 1)
        return SplitSource(images.labels.numpy(), tuple(hwc.shape[1:]), lambda row: hwc[row].numpy(), str)
    raise GencondError(f"{images.info.name} cannot be prepared (neither files nor arrays)")


def _hf_splits(path: Path) -> dict:
    """The train and test split of a Hugging Face ``datasets`` dataset: a ``save_to_disk``
    folder, or parquet files named ``train-*.parquet`` and ``test-*``/``validation-*``."""
    try:
        import datasets
    except ImportError:
        raise GencondError("hf: reading a Hugging Face dataset needs the datasets package "
                           "(pip install 'gencond[hf]')") from None
    parquet = sorted(path.rglob("*.parquet")) if path.is_dir() else []
    try:
        if parquet:
            files: dict[str, list[str]] = {}
            for file in parquet:
                files.setdefault(file.name.split("-")[0].split(".")[0], []).append(str(file))
            if "test" in files:  # a test split is the test split; validation files stand in only without one
                files.pop("validation", None)
            loaded = datasets.load_dataset("parquet", data_files=files)
        else:
            loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as err:
        raise GencondError(f"hf:{path}: not a saved Hugging Face dataset ({str(err).splitlines()[0]})") from None
    if not isinstance(loaded, datasets.DatasetDict):
        raise GencondError(f"hf:{path}: one split only; prepare needs a train and a test (or validation) split")
    named = {"train": loaded.get("train"), "test": loaded.get("test", loaded.get("validation"))}
    if any(split is None for split in named.values()):
        raise GencondError(f"hf:{path}: needs a train and a test (or validation) split, has {', '.join(loaded)}")
    for split in named.values():
        if not {"image", "label"} <= set(split.column_names):
            raise GencondError(f"hf:{path}: needs an image and a label column, has {', '.join(split.column_names)}")
    return {name: split.cast_column("image", datasets.Image(decode=False)) for name, split in named.items()}


def _image_file(entry: dict):
    """A Hugging Face image entry (``decode=False``): its bytes, or the path it names."""
    return io.BytesIO(entry["bytes"]) if entry.get("bytes") else entry["path"]


def _decode(entry: dict, mode: str, size: int, where: str) -> np.ndarray:
    """(H, W, C) uint8, decoded at full scale (draft decoding is the ImageFolder readers')."""
    return decode_image(_image_file(entry), where, size, mode, draft=False).permute(1, 2, 0).numpy()


def hf_sources(path: Path, image_size: int) -> tuple[DatasetInfo, dict[str, SplitSource]]:
    """``hf:PATH``: images decoded from the ``image`` column (grey where the first training
    image is grey, RGB otherwise), resized and cropped to ``image_size`` (0: the first
    training image's size, which must be square); classes from a ``ClassLabel`` ``label``."""
    from PIL import Image

    splits = _hf_splits(path)
    first = splits["train"][0]["image"]
    with Image.open(_image_file(first)) as image:
        mode, (width, height) = ("L" if image.mode in ("1", "L", "I;16") else "RGB"), image.size
    if not image_size:
        if width != height:
            raise GencondError(f"hf:{path}: images are {width}x{height}, not square: pass --image-size")
        image_size = width
    feature = splits["train"].features["label"]
    sources = {}
    for name, split in splits.items():
        labels = np.asarray(split["label"], dtype=np.int64)
        if len(labels) and labels.min() < 0:
            raise GencondError(f"hf:{path}: the {name} split has unlabelled images (label {labels.min()})")
        sources[name] = SplitSource(
            labels, (image_size, image_size, 1 if mode == "L" else 3),
            lambda row, split=split, name=name: _decode(split[row]["image"], mode, image_size, f"{name}[{row}]"),
            lambda row, name=name: f"{name}[{row}]")
    count = int(max(s.labels.max() for s in sources.values())) + 1
    classes = tuple(feature.names) if hasattr(feature, "names") else tuple(str(i) for i in range(count))
    info = DatasetInfo(f"hf:{path}", 1 if mode == "L" else 3, image_size, classes, (), ())
    return info, sources


def prepare_sources(dataset: str, root: str | Path, image_size: int, download: bool) -> tuple[DatasetInfo, dict]:
    """The info and the splits of ``dataset`` (any name gencond reads, or ``hf:PATH``)."""
    prefix, sep, rest = dataset.partition(":")
    if sep and prefix == "hf":
        return hf_sources(Path(rest), image_size)
    if prefix == "prepared":
        raise GencondError(f"{dataset} is prepared already")
    splits = load_dataset(dataset, root, download, image_size or None)
    if image_size and splits.info.image_size != image_size:
        raise GencondError(f"{dataset} is {splits.info.image_size}x{splits.info.image_size}; only ImageFolder and "
                           "hf: datasets are resized by prepare")
    return splits.info, {"train": _set_source(splits.train), "test": _set_source(splits.test)}


# --- prepare ---


def _read_progress(path: Path) -> dict[int, dict]:
    """The chunks a log records; a line cut short by a kill is dropped and the log rewritten
    without it, so later lines start on a line of their own."""
    records, lines = {}, path.read_text().splitlines() if path.is_file() else []
    for line in lines:
        try:
            record = json.loads(line)
            records[int(record["chunk"])] = record
        except (ValueError, KeyError, TypeError):
            continue
    if len(records) != len(lines):
        with atomic_path(path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in records.values()))
    return records


def _decode_chunk(source: SplitSource, pixels: Path, chunk: int, size: int) -> dict:
    """Decode rows [chunk * size, ...) into ``pixels`` and flush them; their channel sums
    (exact integers in float64, so the order chunks finish in never changes them)."""
    out = np.load(pixels, mmap_mode="r+")
    rows = range(chunk * size, min(len(out), (chunk + 1) * size))
    skipped, total, squares = [], np.zeros(out.shape[-1]), np.zeros(out.shape[-1])
    for row in rows:
        try:
            image = source.read(row)
        except UnreadableImage as err:
            skipped.append([row, source.name(row), str(err).removeprefix(f"unreadable image {source.name(row)}: ")])
            out[row] = 0
            continue
        if image.shape != out.shape[1:]:
            raise GencondError(f"{source.name(row)}: image of shape {image.shape}, expected {out.shape[1:]}")
        out[row] = image
        wide = image.reshape(-1, out.shape[-1]).astype(np.float64)
        total += wide.sum(0)
        squares += (wide * wide).sum(0)
    out.flush()
    del out
    return {"chunk": chunk, "skipped": skipped, "sum": total.tolist(), "sumsq": squares.tolist()}


def _prepare_split(source: SplitSource, folder: Path, description: dict, chunk: int, workers: int, bar) -> dict:
    """Decode one split into ``folder`` (resuming what a log there records); its channel sums."""
    folder.mkdir(parents=True, exist_ok=True)
    count, pixels, plan_path = len(source.labels), folder / "pixels.npy", folder / "plan.json"
    plan = {**description, "count": count, "shape": list(source.shape), "chunk": chunk}
    if plan_path.is_file():
        if json.loads(plan_path.read_text()) != plan:
            raise GencondError(f"{folder} holds an unfinished prepare with other settings "
                               f"({plan_path.read_text().strip()}); rerun that command or choose another --output")
    else:
        np.lib.format.open_memmap(pixels, mode="w+", dtype=np.uint8, shape=(count, *source.shape)).flush()
        write_json(plan_path, plan)
    log_path = folder / "progress.jsonl"
    done = _read_progress(log_path)
    todo = [c for c in range(-(-count // chunk)) if c not in done]
    bar.update(sum(min(chunk, count - c * chunk) for c in done))
    with open(log_path, "a") as log:
        for _, record in forked_map(lambda i: _decode_chunk(source, pixels, todo[i], chunk), len(todo), workers):
            log.write(json.dumps(record) + "\n")
            log.flush()
            os.fsync(log.fileno())
            done[record["chunk"]] = record
            bar.update(min(chunk, count - record["chunk"] * chunk))
    skipped = sorted((entry for record in done.values() for entry in record["skipped"]), key=lambda e: e[0])
    np.save(folder / "labels.npy", source.labels.astype(np.int64))
    if skipped:
        unread = np.zeros(count, dtype=bool)
        unread[[row for row, _, _ in skipped]] = True
        np.save(folder / "rows.npy", np.flatnonzero(~unread))
    (folder / "skipped.txt").write_text("".join(f"{name}\t{reason}\n" for _, name, reason in skipped))
    ordered = [done[c] for c in sorted(done)]  # exact while the sums stay below 2^53; then one order always
    sums = {key: np.sum([r[key] for r in ordered], axis=0) for key in ("sum", "sumsq")}
    return {"count": count - len(skipped), "skipped": len(skipped), **sums}


def prepare(dataset: str, output: str | Path, image_size: int = 0, root: str | Path = "data", download: bool = False,
            workers: int = 1, chunk: int = CHUNK, progress: bool = True) -> dict:
    """Decode ``dataset`` into ``output`` (see the module docstring); returns its meta.

    A finished folder for the same dataset and size is left as it is. Normalization
    statistics are the source's (ImageNet's for ImageFolder roots) where it has them, else
    the per-channel mean and std of the readable training images."""
    from tqdm.auto import tqdm

    if chunk <= 0 or workers <= 0:
        raise GencondError("chunk and workers must be positive")
    out = Path(output)
    named = ":" not in dataset  # a name read under a data root (npz:, hf: name their own path)
    description = {"format": FORMAT, "source": dataset, "image_size": image_size,
                   "data_root": str(Path(root).resolve()) if named else None}
    with output_lock(out):
        if (out / "meta.json").is_file():
            meta = json.loads((out / "meta.json").read_text())
            if {k: meta.get(k) for k in description} != description:
                raise GencondError(f"{out} holds another prepared dataset ({meta.get('source')} at "
                                   f"{meta.get('image_size')}); choose another --output")
            _remove_plans(out)
            return meta
        info, sources = prepare_sources(dataset, root, image_size, download)
        total = sum(len(s.labels) for s in sources.values())
        with tqdm(total=total, unit="image", desc=f"prepare {dataset}", disable=not progress) as bar:
            splits = {name: _prepare_split(source, out / name, description, chunk, workers, bar)
                      for name, source in sources.items()}
        info = _with_statistics(info, splits["train"])
        meta = {**description, "info": info.to_dict(),
                "splits": {name: {"count": s["count"], "skipped": s["skipped"]} for name, s in splits.items()}}
        write_json(out / "meta.json", meta)
        _remove_plans(out)
    return meta


def _remove_plans(out: Path) -> None:
    """The logs of a finished prepare (after meta.json: a kill in between leaves a folder
    that is finished, never one that starts over)."""
    for name in SPLITS:
        (out / name / "progress.jsonl").unlink(missing_ok=True)
        (out / name / "plan.json").unlink(missing_ok=True)


def _with_statistics(info: DatasetInfo, train: dict) -> DatasetInfo:
    if info.mean:
        return info
    pixels = train["count"] * info.image_size ** 2
    mean = train["sum"] / pixels
    std = np.sqrt(np.maximum(train["sumsq"] / pixels - mean ** 2, 0.0) * pixels / max(1, pixels - 1))
    return DatasetInfo(info.name, info.channels, info.image_size, info.class_names,
                       tuple(float(m) / 255 for m in mean), tuple(float(s) / 255 for s in std))
