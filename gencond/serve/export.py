"""Writing sampled sets: an ImageFolder tree of PNGs, or a condensed set file, streamed.

A set is written as it is generated, in runs of bounded size, so memory does not grow with
INPC: PNGs go to their class folders run by run; a set of more than ``shard_images``
images in safetensors or npz becomes a folder of shards (each a condensed set file of its
own) with an ``index.json`` written last, which :meth:`CondensedSet.load` reads whole.
Before any work, the bytes the set needs are compared with the free disk space (and a
candidate-selection run's memory with the available memory): a request that cannot fit
ends with one line."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from gencond.artifacts import SHARD_INDEX, CondensedSet, write_shard_index
from gencond.data.base import DatasetInfo
from gencond.errors import GencondError

FORMATS = ("png", "npz", "pt", "safetensors")
# A file system gives every file at least one block: the floor of a PNG's footprint.
FILE_BLOCK = 4096

Run = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]


def class_folder(index: int, name: str, num_classes: int) -> str:
    """``007_horse``: the index prefix keeps ImageFolder's sorted order equal to the labels."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "class"
    return f"{index:0{len(str(num_classes - 1))}d}_{safe}"


def output_path(out: Path, fmt: str, images: int, shard_images: int) -> Path:
    """Where a set of ``images`` lands: the folder for PNGs or shards, else the file. A .pt
    set is written whole, so one beyond ``shard_images`` is refused here."""
    if fmt not in FORMATS:
        raise GencondError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "pt" and images > shard_images:
        raise GencondError(f"a .pt set is written whole, at most --shard-size {shard_images:,} images "
                           f"({images:,} asked): use --format safetensors or npz, which are written in shards")
    if fmt == "png" or images > shard_images:
        return out.with_suffix("") if out.suffix == f".{fmt}" else out
    return out if out.suffix == f".{fmt}" else out.with_suffix(f".{fmt}")


def set_bytes(info: DatasetInfo, images: int, fmt: str, soft_labels: bool) -> int:
    """Bytes on disk for ``images`` images: float32 tensors for set files; for PNGs the
    8-bit pixels (an upper bound of the compressed size) rounded up to a file-system block."""
    pixels = info.channels * info.image_size**2
    if fmt == "png":
        return images * FILE_BLOCK * -(-(pixels + 256) // FILE_BLOCK)
    return images * (4 * pixels + 8 + (4 * info.num_classes if soft_labels else 0))


def human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if size < 1000 or unit == "PB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError  # unreachable


def available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_fits(info: DatasetInfo, images: int, fmt: str, out: Path, soft_labels: bool,
               run_images: int) -> None:
    """One clear line, before any work, when the set would not fit on the disk holding
    ``out`` or a run of ``run_images`` images (plus its copies) in memory."""
    need = set_bytes(info, images, fmt, soft_labels)
    where = out.resolve()
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    if need > free:
        raise GencondError(f"{images:,} images in {fmt} need about {human(need)}, but {where} has {human(free)} free: "
                           "ask for fewer images per class or classes, or write elsewhere (--out)")
    run_bytes = 3 * set_bytes(info, run_images, "safetensors", soft_labels)  # images, a decoded copy, a concatenation
    memory = available_memory()
    if memory is not None and run_bytes > memory:
        raise GencondError(f"a run of {run_images:,} images needs about {human(run_bytes)} of memory, but "
                           f"{human(memory)} is available: ask for fewer images per class or candidates")


def rechunk(runs: Iterable[Run], size: int) -> Iterator[Run]:
    """The same images, labels and soft labels in runs of exactly ``size`` (the last one
    shorter)."""
    held: list[Run] = []
    count = 0
    for run in runs:
        held.append(run)
        count += len(run[1])
        while count >= size:
            joined = [torch.cat(parts) if parts[0] is not None else None for parts in zip(*held)]
            yield tuple(part[:size] if part is not None else None for part in joined)
            rest = tuple(part[size:] if part is not None else None for part in joined)
            held, count = ([rest] if len(rest[1]) else []), count - size
    if count:
        yield tuple(torch.cat(parts) if parts[0] is not None else None for parts in zip(*held))


def write_png_folders(runs: Iterable[Run], info: DatasetInfo, out: Path) -> Path:
    from torchvision.utils import save_image

    counters: dict[int, int] = {}
    for images, labels, _ in runs:
        for image, label in zip(info.denormalize(images).clamp(0, 1), labels.tolist()):
            folder = out / class_folder(label, info.class_names[label], info.num_classes)
            folder.mkdir(parents=True, exist_ok=True)
            k = counters.get(label, 0)
            counters[label] = k + 1
            save_image(image, str(folder / f"{k:05d}.png"))
    return out


def write_stream(runs: Iterable[Run], info: DatasetInfo, method: str, config: dict, out: Path, fmt: str,
                 images: int, shard_images: int) -> Path:
    """Write the runs of a set of ``images`` images in ``fmt``: PNG class folders; one set
    file when it holds at most ``shard_images`` images; else a folder of shard files and
    their index. Returns the path written."""
    path = output_path(out, fmt, images, shard_images)
    if fmt == "png":
        return write_png_folders(runs, info, path)
    if images <= shard_images:
        (x, y, soft), = rechunk(runs, images)
        return CondensedSet(x, y, info, soft, method=method, config=config).save(path)
    count = -(-images // shard_images)
    names = []
    for k, (x, y, soft) in enumerate(rechunk(runs, shard_images)):
        names.append(f"part-{k:05d}-of-{count:05d}.{fmt}")
        shard = {**config, "shard": {"index": k, "of": count}}
        CondensedSet(x, y, info, soft, method=method, config=shard).save(path / names[-1])
    write_shard_index(path / SHARD_INDEX, names, images, method, config)
    return path


def write_sampled(condensed: CondensedSet, out: Path, fmt: str) -> Path:
    """Write a set already in memory (one run)."""
    runs = [(condensed.images, condensed.labels, condensed.soft_labels)]
    return write_stream(runs, condensed.info, condensed.method, condensed.config, out, fmt, len(condensed),
                        max(len(condensed), 1))
