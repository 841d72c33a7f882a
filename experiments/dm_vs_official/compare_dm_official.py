"""DM beside the official implementation: the same data, iterations and seeds, one evaluation.

The official code (github.com/VICO-UoE/DatasetCondensation, ``main_DM.py``) runs on its own
(see this folder's README for the local CPU patch, which stays out of this project), for example

    python main_DM.py --dataset MNIST --model ConvNet --ipc 1 --Iteration 300 \
        --num_exp 3 --num_eval 0 --data_path ../shared/data --save_path out > official_dm.log

It writes one synthetic set per experiment into ``out/res_DM_MNIST_ConvNet_1ipc.pt``; its log
holds a time stamp every 10 iterations, from which the seconds per iteration are read. This
script condenses as many sets with gencond's DM (seeds 0, 1, ...) from the same config, loads
the official sets as plain tensors (``weights_only``), trains ConvNet-3 on every set with one
recipe and prints both accuracies and both speeds side by side.

    python -m experiments.dm_vs_official.compare_dm_official --official-result out/res_DM_MNIST_ConvNet_1ipc.pt \
        --official-log official_dm.log --config configs/dm/mnist_subset.yaml
"""

from __future__ import annotations

import dataclasses
import re
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from gencond.artifacts import CondensedSet
from gencond.cli import guarded
from gencond.config import OneLineParser, config_from_dict, load_yaml
from gencond.data import load_dataset
from gencond.errors import GencondError
from gencond.evaluate import (
    IndexedData,
    TrainConfig,
    TrainingSet,
    resolve_device,
    run_protocol,
)
from gencond.evaluate.report import BenchmarkReport
from gencond.methods import get_method
from gencond.methods.base import run_method

LOG_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] iter = (\d+),")


def official_seconds_per_iteration(log: Path) -> list[float]:
    """Seconds per iteration of each experiment in an official DM log, from the time
    stamps printed every 10 iterations (an experiment starts where the count returns to 0)."""
    runs: list[list[tuple[datetime, int]]] = []
    for line in log.read_text().splitlines():
        match = LOG_LINE.match(line)
        if not match:
            continue
        stamp, iteration = datetime.fromisoformat(match[1]), int(match[2])
        if iteration == 0 or not runs:
            runs.append([])
        runs[-1].append((stamp, iteration))
    rates = [(r[-1][0] - r[0][0]).total_seconds() / (r[-1][1] - r[0][1]) for r in runs if len(r) > 1]
    if not rates:
        raise GencondError(f"{log}: no 'iter = N' lines with time stamps; is it an official main_DM.py log?")
    return rates


def official_sets(path: Path, info) -> list[CondensedSet]:
    """The synthetic sets of an official ``res_DM_*.pt`` file: {'data': [[images, labels], ...]}."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        pairs = saved["data"]
    except (OSError, RuntimeError, KeyError, TypeError) as err:
        raise GencondError(f"{path}: not an official DM result file ({err})") from None
    sets = [CondensedSet(images.float(), labels.long(), info, method="dm (official code)") for images, labels in pairs]
    for s in sets:
        s.validate(str(path))
    return sets


def gencond_sets(cfg, count: int, splits, device: str) -> tuple[list[CondensedSet], list[float]]:
    """``count`` DM sets from one config, seeds 0..count-1, and each run's seconds per iteration."""
    sets, rates = [], []
    for seed in range(count):
        run_cfg = dataclasses.replace(cfg, seed=seed, device=device, output="")
        start = time.perf_counter()
        sets.append(run_method("dm", run_cfg, splits))
        rates.append((time.perf_counter() - start) / run_cfg.iterations)
        print(f"gencond DM seed {seed}: {rates[-1]:.3f} s per iteration", flush=True)
    return sets, rates


def training_set(name: str, sets: list[CondensedSet], evals_per_set: int) -> TrainingSet:
    """Evaluation seed s trains on set s // evals_per_set: condensation seed and network
    seed both vary across the row."""
    data = [IndexedData.from_condensed(s) for s in sets]
    ipc = int(sets[0].images_per_class().max())
    return TrainingSet(name, ipc, lambda seed: data[seed // evals_per_set])


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-result", required=True, help="res_DM_*.pt written by the official main_DM.py")
    parser.add_argument("--official-log", required=True, help="the official run's standard output")
    parser.add_argument("--config", default="configs/dm/mnist_subset.yaml", help="gencond DM config (same iterations)")
    parser.add_argument("--evals-per-set", type=int, default=3, help="ConvNet-3 networks trained on each set")
    parser.add_argument("--eval-epochs", type=int, default=300)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", default="experiments/dm_vs_official/compare_dm_official.json")
    args = parser.parse_args()

    for path in (args.official_result, args.official_log, args.config):
        if not Path(path).is_file():
            raise GencondError(f"{path}: no such file")
    device = resolve_device(args.device)
    report = BenchmarkReport("dm beside the official code", vars(args), device)
    cfg = config_from_dict(get_method("dm").config, load_yaml(args.config), args.config)
    splits = load_dataset(cfg.dataset, cfg.data_root)
    theirs = official_sets(Path(args.official_result), splits.info)
    their_rates = official_seconds_per_iteration(Path(args.official_log))
    ours, our_rates = gencond_sets(cfg, len(theirs), splits, str(device))
    rows = [training_set("gencond DM", ours, args.evals_per_set), training_set("official DM", theirs, args.evals_per_set)]
    results = run_protocol(splits, rows, ["convnet3"], len(theirs) * args.evals_per_set,
                           TrainConfig(epochs=args.eval_epochs), device)

    speeds = {"gencond DM": our_rates, "official DM": their_rates}
    print(f"\n{splits.info.name}: {len(splits.train)} train / {len(splits.test)} test; {len(theirs)} condensed sets each "
          f"(seeds 0..{len(theirs) - 1}), {args.evals_per_set} ConvNet-3 networks per set, {args.eval_epochs} epochs, DSA\n")
    print(f"{'implementation':<14} | IPC | accuracy (%)   | s per DM iteration")
    for r in results:
        rate = speeds[r.name]
        print(f"{r.name:<14} | {r.ipc:<3} | {r.mean:6.2f} ± {r.std:4.2f} | {np.mean(rate):.3f} ± {np.std(rate):.3f}")
    print("\nthe wall time below covers the evaluation and gencond's DM; the official run is timed from its log")
    report.add(seconds_per_iteration=speeds, results=[r.to_dict() for r in results])
    report.write(args.json)


if __name__ == "__main__":
    raise SystemExit(guarded(main, "compare_dm_official.py"))
