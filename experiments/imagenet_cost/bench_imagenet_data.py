"""ImageNet-1K data path on the CPU, measured on the synthetic stand-in in ImageNet's layout
(``scripts/make_synthetic_imagenet.py``: 1,000 classes of JPEGs, written here if absent).

Measures what a generator run asks of the lazy ImageFolder reader at 64x64: random real
batches (the GAN phase) and class-balanced batches (the pool networks and matching:
``ClassSampler``, a few images of each of a few classes) in images/s for several decoding
threads; the memory the index of N files takes (paths and labels only, nothing decoded),
and resident memory over many batches read (it must stay flat: nothing is kept).

    python -m experiments.imagenet_cost.bench_imagenet_data --root runs/synthetic_imagenet --json experiments/imagenet_cost/bench_imagenet_data.json
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

from experiments._common import rss_mib
from gencond.cli import guarded
from gencond.config import OneLineParser
from gencond.data import ClassSampler, load_dataset
from gencond.data.base import TensorImageSet
from gencond.data.synthetic import write_synthetic_imagenet
from gencond.engine import resolve_device
from gencond.errors import GencondError
from gencond.evaluate.protocol import format_rows
from gencond.evaluate.report import BenchmarkReport


def images_per_s(read, batches: int) -> float:
    read(0)  # warm-up
    start = time.perf_counter()
    count = sum(read(i) for i in range(1, batches + 1))
    return count / (time.perf_counter() - start)


def loader_throughput(train, args, rng: torch.Generator) -> dict[str, float]:
    """Random batches read through a DataLoader with 0 (the decoding threads' largest
    count), 2 and every core's worker processes (one decoding thread each: the processes
    are the parallelism), and from as many images
    of the same size held in memory as uint8 arrays (what an ``npz:`` dataset of pre-resized
    images gives; the pixels are random, which the read does not depend on)."""
    from torch.utils.data import DataLoader

    batches = [torch.randint(len(train), (args.batch,), generator=rng) for _ in range(args.batches)]
    found = {}
    for workers in sorted({0, 2, os.cpu_count() or 1}):
        train.workers = 1 if workers else max(args.threads)
        start = time.perf_counter()  # the whole pass, starting the workers included: they prefetch
        count = sum(len(images) for images in DataLoader(batches, batch_size=None, num_workers=workers,
                                                         collate_fn=train.images))
        found[f"DataLoader, {workers} worker process(es)"] = count / (time.perf_counter() - start)
    size, n = train.info.image_size, len(train)
    held = TensorImageSet(train.info, torch.randint(256, (n, train.info.channels, size, size), dtype=torch.uint8,
                                                    generator=rng), train.labels)
    found["in-memory uint8 arrays (npz:)"] = images_per_s(
        lambda i: len(held.images(torch.randint(len(held), (args.batch,), generator=rng))), args.batches)
    return {k: round(v, 1) for k, v in found.items()}


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/synthetic_imagenet")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--train-per-class", type=int, default=4)
    parser.add_argument("--size", type=int, default=256, help="side of the JPEGs written (ImageNet's are ~400x350)")
    parser.add_argument("--image-size", type=int, default=64, help="resolution the reader resizes and crops to")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--per-class", type=int, default=16, help="class-balanced batches: images per class")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 8])
    parser.add_argument("--json", default="experiments/imagenet_cost/bench_imagenet_data.json")
    args = parser.parse_args()
    if min(args.classes, args.train_per_class, args.batch, args.batches, args.per_class, *args.threads) <= 0:
        raise GencondError("--classes, --train-per-class, --batch, --batches, --per-class and --threads must be positive")

    report = BenchmarkReport("imagenet data path", vars(args), resolve_device("cpu"))
    root = Path(args.root)
    if not (root / "train").is_dir():
        start = time.perf_counter()
        write_synthetic_imagenet(root, args.classes, args.train_per_class, 1, args.size)
        print(f"wrote the synthetic data in {time.perf_counter() - start:.0f} s")
    before = rss_mib(os.getpid())
    start = time.perf_counter()
    train = load_dataset("imagenet", root, image_size=args.image_size).train
    seconds, resident = round(time.perf_counter() - start, 2), round(rss_mib(os.getpid()) - before, 1)
    paths = list(train.paths)
    index = {"files": len(train), "seconds": seconds, "rss_mib": resident, "path_table_bytes": train.paths.nbytes,
             "as_list_of_strings_bytes": sys.getsizeof(paths) + sum(map(sys.getsizeof, paths))}
    print(f"index of {index['files']} files: {index['seconds']} s, {index['rss_mib']} MiB resident; paths held in "
          f"{index['path_table_bytes'] / len(train):.1f} bytes a file ({index['as_list_of_strings_bytes'] / len(train):.1f} "
          "as a list of strings)")

    rng = torch.Generator().manual_seed(0)
    sampler = ClassSampler(train, seed=0)
    classes_per_batch = max(1, args.batch // args.per_class)
    rows, rss = [], []
    for threads in args.threads:
        train.workers = threads

        def random_batch(_):
            images = train.images(torch.randint(len(train), (args.batch,), generator=rng))
            rss.append(rss_mib(os.getpid()))
            return len(images)

        def class_batch(_):
            classes = torch.randperm(train.info.num_classes, generator=rng)[:classes_per_batch]
            return len(train.images(sampler.indices(classes, args.per_class)))

        rows.append({"threads": threads, "random_images_per_s": round(images_per_s(random_batch, args.batches), 1),
                     "class_balanced_images_per_s": round(images_per_s(class_batch, args.batches), 1)})
    loaders = loader_throughput(train, args, rng)
    print(format_rows(["decoding threads", "random batches (images/s)",
                       f"class-balanced batches, {classes_per_batch} x {args.per_class} (images/s)"],
                      [[str(r["threads"]), f"{r['random_images_per_s']:.0f}", f"{r['class_balanced_images_per_s']:.0f}"]
                       for r in rows]))
    memory = {"rss_first_batch_mib": round(rss[0], 1), "rss_last_batch_mib": round(rss[-1], 1),
              "rss_max_mib": round(max(rss), 1)}
    print(f"resident memory over {len(rss)} random batches: first {memory['rss_first_batch_mib']} MiB, "
          f"last {memory['rss_last_batch_mib']} MiB, max {memory['rss_max_mib']} MiB; {os.cpu_count()} CPU(s)")
    print(format_rows(["reader", "random batches (images/s)"], [[k, f"{v:,.0f}"] for k, v in loaders.items()]))
    report.add(index=index, throughput=rows, loaders=loaders, memory=memory)
    report.write(args.json)


if __name__ == "__main__":
    raise SystemExit(guarded(main, "bench_imagenet_data.py"))
