"""Foundation benchmark: random real selection vs. the whole training split.

Trains ConvNet-3 from scratch (DSA augmentation, the DC/DSA/DM evaluation recipe) on
random real subsets at several IPC and on the whole training split, tests on the real
test split, and prints one table (mean ± std over seeds, seconds per network).

Also runs the calibration row against the official evaluation code: the official DM
evaluation trains several networks on ONE random subset, so ``random (one set)`` keeps
the subset of seed 0 and varies only the network seed.

    python -m experiments.random_vs_full.bench_foundation --dataset mnist --data-root ../shared/data \
        --ipc 1 10 50 --seeds 3 --epochs 300 --full-epochs 8 --json experiments/random_vs_full/bench_foundation_mnist.json
"""

from __future__ import annotations

import dataclasses

from gencond.cli import guarded
from gencond.config import OneLineParser
from gencond.data import load_dataset
from gencond.evaluate import (
    IndexedData,
    TrainConfig,
    TrainingSet,
    format_table,
    resolve_device,
    run_protocol,
)
from gencond.evaluate.protocol import selection_sets
from gencond.evaluate.report import BenchmarkReport
from gencond.methods import get_method


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--arch", default="convnet3")
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=300, help="epochs on the random subsets")
    parser.add_argument("--full-epochs", type=int, default=8, help="epochs on the whole training split (0 = skip)")
    parser.add_argument("--calibration-ipc", type=int, default=10, help="IPC of the one-subset row (0 = skip)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", default="experiments/random_vs_full/bench_foundation.json")
    args = parser.parse_args()

    device = resolve_device(args.device)
    report = BenchmarkReport("foundation", vars(args), device)
    splits = load_dataset(args.dataset, args.data_root)
    cfg = TrainConfig(epochs=args.epochs)
    results = run_protocol(splits, selection_sets(splits, "random", args.ipc), [args.arch], args.seeds, cfg, device)

    if args.calibration_ipc:
        one_subset = IndexedData.from_tensors(
            *splits.train.batch(get_method("random", "selection").fn(splits.train, args.calibration_ipc, 0))
        )
        row = TrainingSet("random (one set)", args.calibration_ipc, lambda seed: one_subset)
        results += run_protocol(splits, [row], [args.arch], args.seeds, cfg, device)
    if args.full_epochs:
        full_cfg = dataclasses.replace(cfg, epochs=args.full_epochs)
        results += run_protocol(splits, selection_sets(splits, "full", []), [args.arch], args.seeds, full_cfg, device)

    print(f"\n{splits.info.name}: {len(splits.train)} train / {len(splits.test)} test; {args.arch}; "
          f"random subsets {args.epochs} epochs, full split {args.full_epochs} epochs; DSA; {args.seeds} seeds\n")
    print(format_table(results))
    report.add(results=[r.to_dict() for r in results])
    report.write(args.json)


if __name__ == "__main__":
    raise SystemExit(guarded(main, "bench_foundation.py"))
