"""The ImageNet-1K input pipeline on the CPU, side by side in one run: the reader the trainer had
(JPEGs decoded in the training process by a thread pool), the DataLoader worker pipeline
(``loader_workers``), JPEG draft decoding, and prepared uint8 arrays (``gencond prepare``); the
index of 1.28 M files; a ``gencond prepare`` killed with SIGKILL and resumed, against an
uninterrupted one.

Every reader reads the same random batches of the synthetic stand-in in ImageNet's layout and
hands over what a training step gets: normalized float batches (N, 3, 64, 64). The whole pass
is timed, starting the workers included. Class-balanced batches (what DiM's matching step and
pool networks draw within a step, so no worker can read them ahead) are read in the process.

    python -m experiments.data_pipeline.bench_data_pipeline --json experiments/data_pipeline/bench_data_pipeline.json
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from experiments._common import rss_mib
from gencond.cli import guarded
from gencond.config import OneLineParser
from gencond.data import ClassSampler, load_dataset, prepare
from gencond.data.base import LazyImageSet
from gencond.data.loader import read_batches
from gencond.data.sources import image_loader
from gencond.data.synthetic import write_synthetic_imagenet
from gencond.engine import resolve_device
from gencond.evaluate.protocol import format_rows
from gencond.evaluate.report import BenchmarkReport
from gencond.runtime import keep_freed_memory

CPU = torch.device("cpu")


def rate(images, batches: list[torch.Tensor], workers: int, normalize: bool = True) -> float:
    """images/s of normalized batches (or, without ``normalize``, of the uint8 batches a GPU
    host hands over: ``ImageSet.images_on`` normalizes on the device), the whole pass timed."""
    start = time.perf_counter()
    count = 0
    for pixels, labels in read_batches(images, batches, 0, CPU, workers):
        if normalize:
            images.info.from_pixels(pixels)
        count += len(labels)
    return round(count / (time.perf_counter() - start), 1)


def readers(root: Path, prepared: Path, args) -> list[dict]:
    train = load_dataset("imagenet", root, image_size=args.image_size).train
    full = LazyImageSet(train.info, list(train.paths), train.labels, image_loader(args.image_size, draft=False))
    ready = load_dataset(f"prepared:{prepared}").train
    rng = torch.Generator().manual_seed(0)
    batches = [torch.randint(len(train), (args.batch,), generator=rng) for _ in range(args.batches)]
    large = [torch.randint(len(ready), (args.large_batch,), generator=rng) for _ in range(args.batches)]
    sampler, classes = ClassSampler(train, seed=0), max(1, args.batch // args.per_class)
    balanced = [sampler.indices(torch.randperm(train.info.num_classes, generator=rng)[:classes], args.per_class)
                for _ in range(args.batches)]  # what DiM's matching and pool networks read, in the step
    cpus = os.cpu_count() or 1
    readers = [
        ("JPEG, full decode, in the training process (the reader until now)", full, 8, 0, batches),
        ("JPEG, full decode, in the training process", full, cpus, 0, batches),
        (f"JPEG, full decode, {cpus} loader workers", full, 1, cpus, batches),
        ("JPEG, draft decode, in the training process", train, cpus, 0, batches),
        (f"JPEG, draft decode, {cpus} loader workers (the pipeline now)", train, 1, cpus, batches),
        ("prepared uint8 arrays, in the training process", ready, 1, 0, batches),
        (f"prepared uint8 arrays, in the training process, batch {args.large_batch}", ready, 1, 0, large),
        (f"JPEG, draft decode, in the training process, {classes} classes x {args.per_class}", train, cpus, 0,
         balanced),
        (f"prepared uint8 arrays, in the training process, {classes} classes x {args.per_class}", ready, 1, 0,
         balanced),
        ("prepared uint8 arrays, in the training process, uint8 only (normalized on a GPU)", ready, 1, 0, batches),
        (f"prepared uint8 arrays, in the training process, {classes} classes x {args.per_class}, uint8 only", ready,
         1, 0, balanced),
    ]
    passes = [[] for _ in readers]
    for _ in range(args.repeats):  # interleaved, so a slow spell of the machine hits every reader alike
        for found, (name, images, threads, workers, chosen) in zip(passes, readers):
            if isinstance(images, LazyImageSet):
                images.workers = threads
            found.append(rate(images, chosen, workers, normalize="uint8 only" not in name))
    rows = []
    for found, (name, images, threads, workers, chosen) in zip(passes, readers):
        rows.append({"reader": name, "decoding_threads": threads if isinstance(images, LazyImageSet) else None,
                     "loader_workers": workers, "batch": len(chosen[0]), "passes": found,
                     "images_per_s": sorted(found)[len(found) // 2]})
        print(f"{name}: {rows[-1]['images_per_s']:,.0f} images/s (passes {found})", flush=True)
    return rows


def draft_difference(root: Path, size: int, count: int = 200) -> dict:
    """Mean and largest absolute pixel difference (0-255) between draft and full decoding."""
    paths = list(load_dataset("imagenet", root, image_size=size).train.paths)[:count]
    full, draft = image_loader(size, draft=False), image_loader(size, draft=True)
    diff = torch.stack([(full(p).float() - draft(p).float()).abs() for p in paths])
    return {"images": len(paths), "mean_abs": round(diff.mean().item(), 3), "max_abs": int(diff.max())}


def digest(folder: Path) -> str:
    sha = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != ".lock"):
        sha.update(str(path.relative_to(folder)).encode())
        sha.update(path.read_bytes())
    return sha.hexdigest()


def kill_and_resume(root: Path, work: Path, args) -> dict:
    """``gencond prepare`` killed (SIGKILL) once its log holds ``args.kill_after`` chunks, run
    again to the end; its folder's SHA-256 against an uninterrupted prepare's."""
    command = [sys.executable, "-m", "gencond", "prepare", "imagenet", "--data-root", str(root), "--image-size",
               str(args.image_size), "--chunk", str(args.chunk), "--workers", str(os.cpu_count() or 1)]
    start = time.perf_counter()
    subprocess.run([*command, "--output", str(work / "straight")], check=True, stderr=subprocess.DEVNULL)
    straight_s = time.perf_counter() - start
    process = subprocess.Popen([*command, "--output", str(work / "killed")], stderr=subprocess.DEVNULL)
    log, logged = work / "killed" / "train" / "progress.jsonl", 0
    while process.poll() is None:
        logged = len(log.read_text().splitlines()) if log.is_file() else 0
        if logged >= args.kill_after:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    process.wait()
    killed_at = len(log.read_text().splitlines()) if log.is_file() else None
    subprocess.run([*command, "--output", str(work / "killed")], check=True, stderr=subprocess.DEVNULL)
    same = digest(work / "straight") == digest(work / "killed")
    return {"killed": process.returncode == -signal.SIGKILL, "chunks_logged_at_kill": killed_at,
            "chunks": -(-json.loads((work / "straight" / "meta.json").read_text())["splits"]["train"]["count"]
                        // args.chunk), "bitwise_identical": same, "uninterrupted_s": round(straight_s, 1)}


INDEX_CODE = """
import ctypes, gc, json, os, sys, time, torch
from experiments._common import rss_mib
from gencond.data.base import LazyImageSet, DatasetInfo
classes, per_class = int(sys.argv[1]), int(sys.argv[2])
info = DatasetInfo("imagenet", 3, 64, tuple(f"n{c:08d}" for c in range(classes)), (0.5,) * 3, (0.25,) * 3)
gc.collect(); ctypes.CDLL("libc.so.6").malloc_trim(0)
before = rss_mib(os.getpid())
start = time.perf_counter()
paths = [f"/datasets/imagenet/train/n{1440764 + c * 977:08d}/n{1440764 + c * 977:08d}_{(i * 7919) % 1300 + 1}.JPEG"
         for c in range(classes) for i in range(per_class)]
held = LazyImageSet(info, paths, torch.arange(classes).repeat_interleave(per_class), None)
seconds = time.perf_counter() - start
as_list = sys.getsizeof(paths) + sum(map(sys.getsizeof, paths))
del paths
gc.collect(); ctypes.CDLL("libc.so.6").malloc_trim(0)
print(json.dumps({"files": len(held), "seconds": round(seconds, 2), "path_table_bytes": held.paths.nbytes,
                  "labels_bytes": held.labels.numel() * held.labels.element_size(),
                  "as_list_of_strings_bytes": as_list, "rss_growth_mib": round(rss_mib(os.getpid()) - before, 1)}))
"""


def index_memory(files: int) -> dict:
    """The index of ``files`` ImageNet-style paths in a fresh process (malloc returns freed
    memory there, so its resident growth is what the index holds)."""
    classes = 1000
    env = {**os.environ, "GENCOND_KEEP_FREED_MEMORY": "0"}
    out = subprocess.run([sys.executable, "-c", INDEX_CODE, str(classes), str(files // classes)], check=True,
                         capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/synthetic_imagenet")
    parser.add_argument("--work", default="runs/data_pipeline")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--train-per-class", type=int, default=4)
    parser.add_argument("--size", type=int, default=256, help="side of the JPEGs written (ImageNet's are ~400x350)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--large-batch", type=int, default=256)
    parser.add_argument("--per-class", type=int, default=4, help="class-balanced batches: images per class")
    parser.add_argument("--repeats", type=int, default=3, help="passes of every reader, interleaved (median kept)")
    parser.add_argument("--batches", type=int, default=150)
    parser.add_argument("--chunk", type=int, default=128, help="prepare's chunk for the kill-and-resume check")
    parser.add_argument("--kill-after", type=int, default=10, help="chunks logged before the kill")
    parser.add_argument("--index-files", type=int, default=1_281_000)
    parser.add_argument("--json", default="experiments/data_pipeline/bench_data_pipeline.json")
    args = parser.parse_args()

    keep_freed_memory()  # as the training process does
    report = BenchmarkReport("imagenet input pipeline", vars(args), resolve_device("cpu"))
    root, work = Path(args.root), Path(args.work)
    if not (root / "train").is_dir():
        write_synthetic_imagenet(root, args.classes, args.train_per_class, 1, args.size)
    index = index_memory(args.index_files)
    print(f"index of {index['files']:,} paths: {(index['path_table_bytes'] + index['labels_bytes']) / 1e6:.1f} MB "
          f"(paths {index['path_table_bytes'] / 1e6:.1f}, labels {index['labels_bytes'] / 1e6:.1f}; a list of strings: "
          f"{index['as_list_of_strings_bytes'] / 1e6:.1f}), resident growth {index['rss_growth_mib']} MiB", flush=True)
    resumed = kill_and_resume(root, work, args)
    print(f"prepare killed after {resumed['chunks_logged_at_kill']} of {resumed['chunks']} chunks and resumed: "
          f"bitwise identical {resumed['bitwise_identical']}", flush=True)
    start = time.perf_counter()
    meta = prepare("imagenet", work / "prepared", args.image_size, root, workers=os.cpu_count() or 1, progress=False)
    images = sum(s["count"] for s in meta["splits"].values())
    prepared = {"images": images, "seconds": round(time.perf_counter() - start, 2)}
    prepared["images_per_s"] = round(images / prepared["seconds"], 1)
    rows = readers(root, work / "prepared", args)
    difference = draft_difference(root, args.image_size)
    print(format_rows(["reader", "batch", "images/s"], [[r["reader"], str(r["batch"]), f"{r['images_per_s']:,.0f}"]
                                                        for r in rows]))
    report.add(index=index, kill_and_resume=resumed, prepare=prepared, readers=rows, draft_difference=difference,
               rss_mib=round(rss_mib(os.getpid()), 1))
    report.write(args.json)


if __name__ == "__main__":
    raise SystemExit(guarded(main, "bench_data_pipeline.py"))
