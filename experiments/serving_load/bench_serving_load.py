"""Serving under load: a fresh GeneratorDataset read through a DataLoader with several
workers, in a shuffled order, for many images (100k by default).

Measures the resident memory of the main process and its workers as the epoch goes (it
must stay flat: nothing may accumulate per image served), the throughput beside a
single-process read, and checks that the workers serve the images the single-process read
gives for the same seed and epoch (per-image sums, to float tolerance: a worker runs one
thread).

    python -m experiments.serving_load.bench_serving_load --checkpoint checkpoints/dim_digits --images 100000 \\
        --workers 4 --json experiments/serving_load/bench_serving_load.json
"""

from __future__ import annotations

import os
import time

import torch
from torch.utils.data import DataLoader

from experiments._common import rss_mib
from gencond.cli import guarded
from gencond.config import OneLineParser
from gencond.errors import GencondError
from gencond.evaluate.protocol import format_rows
from gencond.evaluate.report import BenchmarkReport
from gencond.models import load_generator
from gencond.serve import GeneratorDataset


def read_epoch(dataset: GeneratorDataset, order: list[int], workers: int, batch_size: int,
               samples: int) -> tuple[torch.Tensor, float, list[tuple[int, float]]]:
    """(per-image sums in ``order``, seconds, [(images read, RSS MiB)] at ``samples`` points)."""
    loader = DataLoader(dataset, batch_size=batch_size, sampler=order, num_workers=workers)
    every = max(1, len(loader) // samples)
    sums, memory, read = [], [], 0
    start = time.perf_counter()
    for b, (images, _) in enumerate(loader):
        sums.append(images.double().sum(dim=(1, 2, 3)))
        read += len(images)
        if (b + 1) % every == 0 or b + 1 == len(loader):
            memory.append((read, round(rss_mib(os.getpid()), 1)))
    return torch.cat(sums), time.perf_counter() - start, memory


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="checkpoints/dim_digits")
    parser.add_argument("--images", type=int, default=100_000, help="images per epoch (a multiple of the classes)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--samples", type=int, default=20, help="memory readings over the epoch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="experiments/serving_load/bench_serving_load.json")
    args = parser.parse_args()
    if min(args.images, args.workers, args.batch_size, args.samples) <= 0:
        raise GencondError("--images, --workers, --batch-size and --samples must be positive")

    generator = load_generator(args.checkpoint)
    classes = generator.info.num_classes
    inpc = max(1, args.images // classes)
    report = BenchmarkReport("serving_load", vars(args), torch.device("cpu"))
    order = torch.randperm(inpc * classes, generator=torch.Generator().manual_seed(args.seed)).tolist()
    single, single_seconds, _ = read_epoch(GeneratorDataset(generator, inpc, args.seed, fresh=True), order, 0,
                                           args.batch_size, args.samples)
    served, seconds, memory = read_epoch(GeneratorDataset(generator, inpc, args.seed, fresh=True), order,
                                         args.workers, args.batch_size, args.samples)
    difference = float(((served - single).abs() / single.abs().clamp_min(1.0)).max())
    warm = next(m for n, m in memory if n >= len(order) // 10)  # after the workers' start-up
    growth = 100.0 * (max(m for n, m in memory if n >= len(order) // 10) - warm) / warm
    rows = [["single process", f"{len(order) / single_seconds:,.0f}", "-", "-"],
            [f"{args.workers} workers", f"{len(order) / seconds:,.0f}", f"{warm:,.0f} -> {memory[-1][1]:,.0f}",
             f"{growth:+.1f} %"]]
    print(f"\n{len(order):,} images ({inpc} per class) from {args.checkpoint}, shuffled, batches of {args.batch_size}; "
          f"largest relative difference of the per-image sums from the single-process read: {difference:.1e}\n")
    print(format_rows(["read", "images/s", "RSS MiB (10 % -> end)", "RSS growth after 10 %"], rows))
    report.add(images=len(order), inpc=inpc, single_process_seconds=round(single_seconds, 2),
               workers_seconds=round(seconds, 2), images_per_second=round(len(order) / seconds, 1),
               single_images_per_second=round(len(order) / single_seconds, 1), rss_mib=memory,
               rss_growth_percent=round(growth, 2), max_relative_difference=difference,
               same_images=difference < 1e-5, torch_threads=torch.get_num_threads())
    report.write(args.json)


if __name__ == "__main__":
    raise SystemExit(guarded(main, "bench_serving_load.py"))
