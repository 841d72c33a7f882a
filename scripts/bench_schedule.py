"""Choose a generator's schedule on held-out data: variants of one config of a generator
method (the codebook generator, DiM) trained with a validation split carved from the
training data, their fixed sets scored on that split (never the test split), beside random
and herded real images of the same carved split.

Every variant trains with ``validation_per_class`` images per class held out; its fixed
INPC sets (the codebook's first codes; DiM's draws of each seed) each train a ConvNet-3
from scratch (the evaluation recipe, ``--eval-epochs``, DSA, ``--seeds`` seeds) that is
tested on the validation images. The test split is not read. A choice made from this table
is then trained on the whole training split and measured on the test split by ``gencond
bench``.

    python scripts/bench_schedule.py --config configs/codebook/digits.yaml \\
        --variant 'herding 20 epochs, lr/10={}' --json results/bench_codebook_schedule_digits.json
    python scripts/bench_schedule.py --method dim --config configs/dim/digits.yaml \\
        --variant 'as shipped={}' --variant '40 + 10 epochs at 1e-4={gan_epochs: 40, match_epochs: 10, lr: 0.0001}'
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from gencond.artifacts import load_generator
from gencond.cli import guarded
from gencond.config import OneLineParser
from gencond.errors import GencondError
from gencond.evaluate.protocol import TrainingSet, format_table, run_protocol, selection_sets
from gencond.evaluate.report import (
    BenchmarkReport,
    add_set_argument,
    config_with_sets,
    parse_variant,
    variant_in_folder,
)
from gencond.methods import get_method, list_methods
from gencond.methods.coresets import SelectionConfig, herding
from gencond.serve import sample_set
from gencond.training import IndexedData, TrainConfig, resolve_device
from gencond.training.generator import trained_generator


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=list_methods("generator"), default="codebook")
    parser.add_argument("--config", help="the method's config (default: configs/METHOD/digits.yaml)")
    add_set_argument(parser)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME={key: value}",
                        help="a config variant to train (repeatable; {} = the config as it is)")
    parser.add_argument("--work-dir", default="runs/bench_schedule")
    parser.add_argument("--validation-per-class", type=int, default=20)
    parser.add_argument("--inpc", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--eval-epochs", type=int, default=300)
    parser.add_argument("--herding-epochs", type=int, default=5, help="herding's embedding network (real rows)")
    parser.add_argument("--reuse", action="store_true",
                        help="score variants whose generator is already in WORK_DIR without training them again")
    parser.add_argument("--no-real", action="store_true", help="leave out the random and herding rows")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", default="results/bench_schedule.json")
    args = parser.parse_args()
    if not args.variant or min(args.validation_per_class, args.seeds, args.eval_epochs, *args.inpc) <= 0:
        raise GencondError("give at least one --variant; --validation-per-class, --seeds, --eval-epochs and --inpc "
                           "must be positive")

    device = resolve_device(args.device)
    report = BenchmarkReport(f"{args.method}_schedule", vars(args), device)
    method = get_method(args.method, "generator")
    base = config_with_sets(method.config, args.config or f"configs/{args.method}/digits.yaml", args.set)
    base = dataclasses.replace(base, validation_per_class=args.validation_per_class, sample_every=0)
    variants = [parse_variant(item) for item in args.variant]
    configs = {name: variant_in_folder(method.config, base, name, overrides, args.work_dir)
               for name, overrides in variants}
    train_seconds = {}
    for name, cfg in configs.items():
        if args.reuse and trained_generator(cfg.output_dir):
            train_seconds[name] = None  # trained by an earlier run: its seconds are in that run's JSON and log
            continue
        start = time.perf_counter()
        method.fn(cfg)
        train_seconds[name] = round(time.perf_counter() - start, 1)

    splits = base.load_splits()  # the carved split: training images, validation images
    held_out = dataclasses.replace(splits, test=splits.validation)  # scored on the validation split only
    rows = [] if args.no_real else selection_sets(held_out, "random", args.inpc) + selection_sets(
        held_out, "herding", args.inpc, lambda images, ipc, seed: herding(
            images, ipc, 0, SelectionConfig(embed_epochs=args.herding_epochs, device=args.device)))
    for name, cfg in configs.items():
        generator = load_generator(Path(cfg.output_dir) / "generator", device)
        rows += [TrainingSet(name, inpc, lambda seed, g=generator, n=inpc: IndexedData.from_condensed(sample_set(g, n, seed)))
                 for inpc in args.inpc]
    results = run_protocol(held_out, rows, ["convnet3"], args.seeds, TrainConfig(epochs=args.eval_epochs), device)

    print(f"\n{splits.info.name}: {len(splits.train)} training / {len(splits.validation)} validation images (the "
          f"test split is not read); fixed sets, ConvNet-3, {args.eval_epochs} epochs, DSA, {args.seeds} seeds, "
          "final validation accuracy\n")
    print(format_table(results))
    report.add(dataset=splits.info.to_dict(), validation_images=len(splits.validation), train_seconds=train_seconds,
               configs={name: dataclasses.asdict(cfg) for name, cfg in configs.items()},
               results=[r.to_dict() for r in results], torch_threads=torch.get_num_threads())
    report.write(args.json)


if __name__ == "__main__":
    raise SystemExit(guarded(main, "bench_schedule.py"))
