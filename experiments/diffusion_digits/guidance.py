"""Which classifier-free guidance scale (and sampler steps) should the digits diffusion
generator serve with? Fixed sets of one generator trained with a validation split carved from
the training data (``gencond sweep``'s plain variant), drawn at each setting and scored on that
validation split only (ConvNet-3, DSA, final accuracy); the test split is not read.

    python -m experiments.diffusion_digits.guidance --generator runs/sweep_diffusion_digits/plain/generator \\
        --json experiments/diffusion_digits/guidance.json
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from gencond.data import DataConfig
from gencond.engine import IndexedData, TrainConfig, resolve_device
from gencond.evaluate.protocol import TrainingSet, format_table, run_protocol
from gencond.evaluate.report import BenchmarkReport
from gencond.models import load_generator
from gencond.serve import sample_set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", required=True, help="a diffusion generator trained with the split below held out")
    parser.add_argument("--validation-per-class", type=int, default=20, help="as the generator's training run")
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    parser.add_argument("--steps", type=int, nargs="+", default=[25])
    parser.add_argument("--inpc", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = resolve_device("auto")
    generator = load_generator(args.generator, device)
    record = generator.training_record
    data = DataConfig(dataset=record["dataset"], data_root=record.get("data_root", "data"), seed=record["seed"],
                      validation_per_class=args.validation_per_class)
    if record.get("validation_per_class") != args.validation_per_class:
        raise SystemExit(f"the generator held out {record.get('validation_per_class')} images per class, not "
                         f"{args.validation_per_class}: its validation split would overlap its training images")
    splits = data.load_splits()
    held_out = dataclasses.replace(splits, test=splits.validation)  # scored on the validation split only
    rows = []
    for steps in args.steps:
        for guidance in args.guidance:
            served = generator.with_sampler(steps=steps, guidance_scale=guidance)
            rows += [TrainingSet(f"guidance {guidance:g}, {steps} steps", n, lambda seed, g=served, n=n:
                                 IndexedData.from_condensed(sample_set(g, n, seed))) for n in args.inpc]
    report = BenchmarkReport("diffusion_guidance", vars(args) | {"json": str(args.json)}, device)
    results = run_protocol(held_out, rows, ["convnet3"], args.seeds, TrainConfig(epochs=args.epochs), device, print)
    print(f"\n{len(splits.train)} training / {len(splits.validation)} validation images; final validation accuracy\n")
    print(format_table(results))
    report.add(results=[r.to_dict() for r in results], validation_images=len(splits.validation))
    report.write(args.json or Path("runs/diffusion_guidance.json"))


if __name__ == "__main__":
    main()
