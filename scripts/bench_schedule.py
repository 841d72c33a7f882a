"""Choose a method's settings on held-out data: variants of one config of a generator
method (the codebook generator, DiM) or a pixel method (DM, DC, DSA, IDC), trained with a
validation split carved from the training data, their fixed sets scored on that split (never
the test split), beside random and herded real images of the same carved split.

Every variant trains with ``validation_per_class`` images per class held out. A generator's
fixed INPC sets (the codebook's first codes; DiM's draws of each seed), or a pixel method's
set condensed at each INPC as its IPC, each train a ConvNet-3 from scratch (the evaluation
recipe, ``--eval-epochs``, DSA, ``--seeds`` seeds) that is tested on the validation images.
The test split is not read. A choice made from this table is then trained on the whole
training split and measured on the test split by ``gencond bench``.

    python scripts/bench_schedule.py --config configs/codebook/digits.yaml \\
        --variant 'herding 20 epochs, lr/10={}' --json results/bench_codebook_schedule_digits.json
    python scripts/bench_schedule.py --method dim --config configs/dim/digits.yaml \\
        --variant 'as shipped={}' --variant '40 + 10 epochs at 1e-4={gan_epochs: 40, match_epochs: 10, lr: 0.0001}'
    python scripts/bench_schedule.py --method dm --config configs/dm/cifar10_subset.yaml \\
        --variant 'fp32={real_mixed_precision: "no"}' --variant 'bf16={real_mixed_precision: bf16}'
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
    variant_config,
    variant_folder,
    variant_in_folder,
)
from gencond.methods import Method, get_method, list_methods
from gencond.methods.base import condense_or_reuse
from gencond.methods.coresets import SelectionConfig, herding
from gencond.serve import sample_set
from gencond.training import IndexedData, TrainConfig, resolve_device
from gencond.training.generator import reusable_generator

TRAINED_KINDS = ("generator", "pixel")


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=sorted(name for kind in TRAINED_KINDS for name in list_methods(kind)),
                        default="codebook")
    parser.add_argument("--config", help="the method's config (default: configs/METHOD/digits.yaml)")
    add_set_argument(parser)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME={key: value}",
                        help="a config variant to train (repeatable; {} = the config as it is)")
    parser.add_argument("--work-dir", default="runs/bench_schedule")
    parser.add_argument("--validation-per-class", type=int, default=20)
    parser.add_argument("--inpc", type=int, nargs="+", default=[1, 10],
                        help="images per class of the fixed sets (a pixel method condenses one set at each)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--eval-epochs", type=int, default=300)
    parser.add_argument("--herding-epochs", type=int, default=5, help="herding's embedding network (real rows)")
    parser.add_argument("--reuse", action="store_true",
                        help="score variants whose generator or sets are already in WORK_DIR without training them again")
    parser.add_argument("--no-real", action="store_true", help="leave out the random and herding rows")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", default="results/bench_schedule.json")
    args = parser.parse_args()
    if not args.variant or min(args.validation_per_class, args.seeds, args.eval_epochs, *args.inpc) <= 0:
        raise GencondError("give at least one --variant; --validation-per-class, --seeds, --eval-epochs and --inpc "
                           "must be positive")

    device = resolve_device(args.device)
    report = BenchmarkReport(f"{args.method}_schedule", vars(args), device)
    method = get_method(args.method)
    base = config_with_sets(method.config, args.config or f"configs/{args.method}/digits.yaml", args.set)
    base = dataclasses.replace(base, validation_per_class=args.validation_per_class)
    variants = [parse_variant(item) for item in args.variant]
    for name, overrides in variants:
        if {"seed", "validation_per_class"} & set(overrides):
            raise GencondError(f"--variant {name}: seed and validation_per_class choose the carved split, which every "
                               "variant shares; set them for all with --set")
    trained = generator_variants if method.kind == "generator" else pixel_variants
    configs, variant_rows, train_seconds = trained(method, base, variants, args, device)

    splits = base.load_splits()  # the carved split: training images, validation images
    held_out = dataclasses.replace(splits, test=splits.validation)  # scored on the validation split only
    rows = [] if args.no_real else selection_sets(held_out, "random", args.inpc) + selection_sets(
        held_out, "herding", args.inpc, lambda images, ipc, seed: herding(
            images, ipc, 0, SelectionConfig(embed_epochs=args.herding_epochs, device=args.device)))
    results = run_protocol(held_out, rows + variant_rows, ["convnet3"], args.seeds, TrainConfig(epochs=args.eval_epochs),
                           device)

    print(f"\n{splits.info.name}: {len(splits.train)} training / {len(splits.validation)} validation images (the "
          f"test split is not read); fixed sets, ConvNet-3, {args.eval_epochs} epochs, DSA, {args.seeds} seeds, "
          "final validation accuracy\n")
    print(format_table(results))
    report.add(dataset=splits.info.to_dict(), validation_images=len(splits.validation), train_seconds=train_seconds,
               configs=configs,
               results=[r.to_dict() for r in results], torch_threads=torch.get_num_threads())
    report.write(args.json)


def generator_variants(method: Method, base, variants: list[tuple[str, dict]], args, device: torch.device):
    """Train each generator variant (or reuse it); returns (the configs as run, as dicts, fixed-set
    rows, training seconds)."""
    base = dataclasses.replace(base, sample_every=0)
    configs = {name: variant_in_folder(method.config, base, name, overrides, args.work_dir)
               for name, overrides in variants}
    train_seconds, rows = {}, []
    for name, cfg in configs.items():
        if args.reuse and reusable_generator(method.name, cfg):
            train_seconds[name] = None  # trained by an earlier run: its seconds are in that run's JSON and log
        else:
            start = time.perf_counter()
            method.fn(cfg)
            train_seconds[name] = round(time.perf_counter() - start, 1)
        generator = load_generator(Path(cfg.output_dir) / "generator", device)
        rows += [TrainingSet(name, inpc, lambda seed, g=generator, n=inpc: IndexedData.from_condensed(sample_set(g, n, seed)))
                 for inpc in args.inpc]
    return {name: dataclasses.asdict(cfg) for name, cfg in configs.items()}, rows, train_seconds


def pixel_variants(method: Method, base, variants: list[tuple[str, dict]], args, device: torch.device):
    """Condense each pixel variant at every INPC on ``--device`` (or reuse its sets); returns (the
    configs as run per variant and INPC, as dicts, set rows, condensation seconds per variant and
    INPC). One set per INPC: the seeds vary the evaluation."""
    configs, seconds, rows = {}, {}, []
    for name, overrides in variants:
        if {"ipc", "output"} & set(overrides):
            raise GencondError(f"--variant {name}: a pixel variant's ipc and output come from --inpc and --work-dir")
        cfg = variant_config(method.config, base, name, overrides)
        configs[name], seconds[name] = {}, {}
        for inpc in args.inpc:
            path = variant_folder(args.work_dir, name) / f"ipc{inpc}.safetensors"
            run = dataclasses.replace(cfg, ipc=inpc, output=str(path), device=args.device)
            configs[name][inpc] = dataclasses.asdict(run)
            condensed = condense_or_reuse(method.name, run, args.reuse)
            seconds[name][inpc] = condensed.config["condense_seconds"]
            rows.append(TrainingSet(name, inpc, lambda seed, c=condensed: IndexedData.from_condensed(c)))
    return configs, rows, seconds


if __name__ == "__main__":
    raise SystemExit(guarded(main, "bench_schedule.py"))
