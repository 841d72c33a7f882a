"""Serving benchmark: what a trained generator's sets are worth at equal images per class,
plain and improved at serving time, beside real-image baselines, in one run.

Rows (every ``--inpc``): random real images, herding, DM sets given with ``--dm``, and for
each generator folder of ``--generator NAME=FOLDER``: its fixed set (the first INPC
positions), the fixed set kept by candidate selection (M x INPC draws per class, one row
per ``--rules`` entry), the fixed set drawn with truncated latents (one row per
``--truncation`` value) and the fresh protocol. Columns: ConvNet-3 final test accuracy
with hard labels, and in a separate column (never one ranking) with soft labels, the
logits of one teacher trained on the real training split, for the generator rows and
random real images. The selection network of candidate selection and of herding is the
coresets' ConvNet-3 trained ``--selector-epochs`` on the real training split.

    python -m experiments.serving.bench_serving --dataset mnist --data-root ../shared/data \\
        --generator DiM=runs/bench_codebook_mnist/DiM/generator \\
        --generator codebook=runs/bench_codebook_mnist/nested_K10/generator \\
        --dm runs/bench_codebook_mnist/dm_ipc1.safetensors runs/bench_codebook_mnist/dm_ipc10.safetensors \\
        --json experiments/serving/bench_serving_mnist.json
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable

import torch

from gencond.artifacts.condensed import check_compatible
from gencond.cli import guarded
from gencond.config import OneLineParser
from gencond.data import DataConfig
from gencond.engine import IndexedData, TrainConfig, resolve_device
from gencond.engine.networks import real_data_network, test_accuracy
from gencond.engine.sampling import set_latents
from gencond.evaluate.protocol import (
    FreshSamples,
    TrainingSet,
    condensed_sets,
    format_table,
    run_protocol,
    selection_sets,
)
from gencond.evaluate.report import BenchmarkReport
from gencond.methods import get_method
from gencond.methods.coresets import SelectionConfig, embedding_network
from gencond.models import load_generator
from gencond.serve import CANDIDATE_RULES, Selector, sample_set

SOFT_ROWS = ("all", "plain", "none")


def named_folder(item: str) -> tuple[str, str]:
    name, sep, folder = item.partition("=")
    if not (name and sep and folder):
        raise argparse.ArgumentTypeError(f"expects NAME=FOLDER, got {item!r}")
    return name, folder


def kept_rows(rows: list[TrainingSet], only: list[str] | None) -> list[TrainingSet]:
    """The rows named in ``only`` (all rows when it is None)."""
    return rows if only is None else [row for row in rows if row.name in only]


def candidate_row_name(generator: str, rule: str, candidates: int) -> str:
    """The table name of a generator's fixed set kept by candidate selection."""
    return f"{generator} fixed + {rule} of {candidates}x"


def generator_rows(name: str, generator, inpcs: list[int], candidates: int, rules: list[str],
                   selector: Callable[[], Selector], truncations: list[float]
                   ) -> tuple[list[TrainingSet], list[TrainingSet]]:
    """(every row, the plain ones) of one generator: fixed, the fixed set kept by candidate
    selection (one row per rule; ``selector()`` is called when such a row makes its set), the
    fixed set of truncated latents (one row per psi) and fresh; the plain rows are fixed and fresh."""
    rows, plain = [], []
    for n in inpcs:
        plain.append(TrainingSet(f"{name} fixed", n,
                                 lambda seed, n=n: IndexedData.from_condensed(sample_set(generator, n, seed))))
        rows.append(plain[-1])
        for rule in rules:
            rows.append(TrainingSet(candidate_row_name(name, rule, candidates), n,
                                    lambda seed, n=n, r=rule: IndexedData.from_condensed(
                                        sample_set(generator, n, seed, candidates=candidates, rule=r,
                                                   selector=selector()))))
        for psi in truncations:
            if not truncation_changes_the_set(generator, n, psi):
                print(f"{name} at INPC {n}: truncation {psi:g} leaves the fixed set as it is; row skipped")
                continue
            rows.append(TrainingSet(f"{name} fixed, truncation {psi:g}", n,
                                    lambda seed, n=n, g=generator.truncated(psi): IndexedData.from_condensed(
                                        sample_set(g, n, seed))))
        plain.append(TrainingSet(f"{name} fresh", n, lambda seed, n=n: FreshSamples(generator, n)))
        rows.append(plain[-1])
    return rows, plain


def truncation_changes_the_set(generator, inpc: int, psi: float) -> bool:
    """False where the fixed set has no Gaussian part to truncate (a codebook generator's
    first K codes)."""
    classes = torch.arange(generator.info.num_classes)
    return not torch.equal(set_latents(generator, classes, inpc, 0),
                           set_latents(generator.truncated(psi), classes, inpc, 0))


def timed(rows: list[TrainingSet], seconds: dict[tuple[str, int | None], list[float]]) -> None:
    """Record how long each row takes to make its set (drawing, selecting), per seed."""
    for row in rows:
        def make(seed, row=row, make=row.make):
            start = time.perf_counter()
            data = make(seed)
            seconds.setdefault((row.name, row.ipc), []).append(time.perf_counter() - start)
            return data
        row.make = make


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--generator", action="append", default=[], type=named_folder, metavar="NAME=FOLDER")
    parser.add_argument("--dm", nargs="*", default=[], help="DM condensed set files (one per IPC)")
    parser.add_argument("--inpc", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--candidates", type=int, default=10, metavar="M")
    parser.add_argument("--rules", nargs="*", default=list(CANDIDATE_RULES))
    parser.add_argument("--truncation", type=float, nargs="*", default=[], metavar="PSI",
                        help="one more fixed-set row per generator and PSI: latents truncated at PSI")
    parser.add_argument("--selector-epochs", type=int, default=SelectionConfig.embed_epochs)
    parser.add_argument("--teacher-epochs", type=int, default=10)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--soft", choices=SOFT_ROWS, default="all",
                        help="soft-label column for: all generator rows and random real, 'plain' ones "
                             "(random real, generator fixed and fresh; not the candidate-selected), or none")
    parser.add_argument("--no-real", action="store_true",
                        help="leave out the random and herding rows (a run of more generators beside an earlier one: "
                             "same seeds, same real rows)")
    parser.add_argument("--only", nargs="+", metavar="ROW",
                        help="run only these rows, named as in the table (e.g. 'DiM fresh' 'random'): finishing part "
                             "of an earlier table, same seeds")
    parser.add_argument("--no-hard", action="store_true",
                        help="leave out the hard-label column (a soft-label column beside an earlier run)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--eval-epochs", type=int, default=300)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", default="experiments/serving/bench_serving.json")
    args = parser.parse_args()
    unknown = [r for r in args.rules if r not in CANDIDATE_RULES]
    if unknown or args.candidates < 2 or not all(psi > 0 for psi in args.truncation):
        parser.error(f"--rules must be among {', '.join(CANDIDATE_RULES)}, --candidates >= 2 and every --truncation > 0")
    if args.no_hard and args.soft == "none":
        parser.error("--no-hard with --soft none leaves no column to run")

    device = resolve_device(args.device)
    report = BenchmarkReport("serving", vars(args), device)
    splits = DataConfig(dataset=args.dataset, data_root=args.data_root).load_splits()
    selection = SelectionConfig(embed_epochs=args.selector_epochs, device=args.device)
    seconds: dict[str, float] = {}

    @functools.cache
    def selector() -> Selector:
        """Trained on first use, so a run without candidate rows (``--only``, ``--rules``) does
        not pay for it; herding's seed-0 network, trained once for both."""
        start = time.perf_counter()
        network = embedding_network(splits.train, selection, 0)
        seconds["selector"] = round(time.perf_counter() - start, 1)
        return Selector(network, {"network": "convnet3", "epochs": args.selector_epochs,
                                  "trained_on": "the real training split"})

    herding = get_method("herding", "selection").fn
    real = [] if args.no_real else selection_sets(splits, "random", args.inpc) + selection_sets(
        splits, "herding", args.inpc, lambda images, ipc, seed: herding(images, ipc, seed, selection))
    generated, plain = [], []
    for name, folder in args.generator:
        generator = load_generator(folder, device)
        check_compatible(generator.info, splits.info, folder)
        rows, plain_rows = generator_rows(name, generator, args.inpc, args.candidates, args.rules, selector,
                                          args.truncation)
        generated += rows
        plain += plain_rows
    dm = condensed_sets(splits, args.dm)
    for row in dm:
        row.name = "DM"
    if args.only is not None:
        missing = set(args.only) - {row.name for row in real + dm + generated}
        if missing:
            parser.error(f"--only names no row {', '.join(sorted(missing))!r}; rows: "
                         f"{', '.join(dict.fromkeys(row.name for row in real + dm + generated))}")
        real, dm, generated, plain = (kept_rows(rows, args.only) for rows in (real, dm, generated, plain))

    candidate_names = {candidate_row_name(name, rule, args.candidates)
                       for name, _ in args.generator for rule in args.rules}
    if any(row.name in candidate_names for row in generated):
        selector()  # trained here, outside the timing of the rows that use it
    sampling: dict[tuple[str, int | None], list[float]] = {}
    timed(real + generated, sampling)
    cfg = TrainConfig(epochs=args.eval_epochs, temperature=args.temperature)
    hard = [] if args.no_hard else run_protocol(splits, real + dm + generated, ["convnet3"], args.seeds, cfg, device)
    soft, teacher_accuracy, soft_note = [], None, "no soft labels"
    if args.soft != "none":  # the teacher is trained only for a soft-label column
        start = time.perf_counter()
        teacher = real_data_network(splits.train, "convnet3", args.teacher_epochs, device, 0)
        seconds["teacher"] = round(time.perf_counter() - start, 1)
        random_real = [r for r in real if r.name == "random"]
        soft_rows = {"all": random_real + generated, "plain": random_real + plain}[args.soft]
        soft = run_protocol(splits, soft_rows, ["convnet3"], args.seeds, cfg, device, labels=["soft"], teacher=teacher)
        teacher_accuracy = round(test_accuracy(teacher, splits.test, device), 2)  # after the evaluation: reported only
        soft_note = (f"soft labels: a ConvNet-3 teacher trained {args.teacher_epochs} epochs on the real training "
                     f"split, T = {args.temperature} (teacher test accuracy {teacher_accuracy:.2f} %)")
    results = hard + soft

    print(f"\n{splits.info.name}: {len(splits.train)} train / {len(splits.test)} test; ConvNet-3, "
          f"{args.eval_epochs} epochs, DSA, {args.seeds} seeds, final test accuracy; candidates M = {args.candidates}; "
          f"{soft_note}\n")
    set_seconds = {key: round(sum(v) / len(v), 2) for key, v in sampling.items()}
    print(format_table(results, {key: {"s to make the set": f"{v:.2f}"} for key, v in set_seconds.items()}))
    report.add(dataset=splits.info.to_dict(), setup_seconds=seconds, teacher_test_accuracy=teacher_accuracy,
               results=[r.to_dict() for r in results], torch_threads=torch.get_num_threads(),
               set_seconds=[{"training_set": name, "ipc": ipc, "seconds": v} for (name, ipc), v in set_seconds.items()])
    report.write(args.json)


if __name__ == "__main__":
    raise SystemExit(guarded(main, "bench_serving.py"))
