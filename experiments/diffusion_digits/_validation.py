"""What the digits diffusion drivers share: a generator trained with a validation split carved
from the training data, its sets scored on that split only (the test split is not read), and
the report they write."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from gencond.data import DataConfig, DatasetSplits
from gencond.engine import TrainConfig, resolve_device
from gencond.evaluate.protocol import TrainingSet, format_table, run_protocol
from gencond.evaluate.report import BenchmarkReport
from gencond.models import ConditionalGenerator, load_generator


def arguments(description: str) -> argparse.ArgumentParser:
    """A driver's parser with the arguments every driver takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--generator", required=True, help="a diffusion generator trained with the split below held out")
    parser.add_argument("--validation-per-class", type=int, default=20, help="as the generator's training run")
    parser.add_argument("--inpc", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--json", type=Path)
    return parser


def held_out_generator(args: argparse.Namespace) -> tuple[ConditionalGenerator, DatasetSplits]:
    """The generator and its dataset's splits with ``test`` replaced by the validation split it
    was trained without; refuses a generator that held out another split."""
    generator = load_generator(args.generator, resolve_device("auto"))
    record = generator.training_record
    if record.get("validation_per_class") != args.validation_per_class:
        raise SystemExit(f"the generator held out {record.get('validation_per_class')} images per class, not "
                         f"{args.validation_per_class}: its validation split would overlap its training images")
    data = DataConfig(dataset=record["dataset"], data_root=record.get("data_root", "data"), seed=record["seed"],
                      validation_per_class=args.validation_per_class)
    splits = data.load_splits()
    return generator, dataclasses.replace(splits, test=splits.validation)


def score_and_write(name: str, args: argparse.Namespace, generator: ConditionalGenerator, held_out: DatasetSplits,
                    rows: list[TrainingSet], **extra) -> None:
    """Train a ConvNet-3 (DSA) per row, INPC and seed, print the table of final validation
    accuracy, and write it with ``extra`` to ``--json`` (default runs/NAME.json)."""
    report = BenchmarkReport(name, vars(args) | {"json": str(args.json)}, generator.device)
    results = run_protocol(held_out, rows, ["convnet3"], args.seeds, TrainConfig(epochs=args.epochs),
                           generator.device, print)
    print(f"\n{len(held_out.train)} training / {len(held_out.test)} validation images; final validation accuracy\n")
    print(format_table(results))
    report.add(results=[r.to_dict() for r in results], validation_images=len(held_out.test), **extra)
    report.write(args.json or Path(f"runs/{name}.json"))
