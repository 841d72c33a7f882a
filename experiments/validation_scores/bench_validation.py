"""Which held-out score predicts the final test accuracy of a generator's fixed sets?

1. trains one generator (``--method``, ``--config``) with a validation split carved from
   its training data (``--validation-per-class``), keeping its weights every
   ``--keep-every`` epochs (``keep_every``);
2. scores every kept state on held-out data only, each "higher is better":
   - validation accuracy: a ConvNet-3 trained briefly on one fixed set drawn from the
     state, tested on the validation split (the score of ``select_by: validation``);
   - class fidelity: the share of drawn images that a ConvNet-3 trained on the real
     training split assigns to their label;
   - minus the feature distance: FID between drawn images and the validation images in
     that network's features, at equal N;
3. only then reads the test split: the final test accuracy of every state's fixed INPC
   set (ConvNet-3 from scratch, full protocol, several seeds);
4. prints, per score, the Spearman rank correlation with the test accuracy over the
   states, the epoch the score would pick and that state's test accuracy, beside the
   last state's (and the best state by test, for reference only: nothing uses it).

    python -m experiments.validation_scores.bench_validation --method codebook --config configs/codebook/digits.yaml \\
        --work-dir runs/bench_validation_digits --json experiments/validation_scores/bench_validation_digits.json
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from experiments._common import add_set_argument
from gencond.cli import guarded
from gencond.config import OneLineParser, config_with_sets
from gencond.engine import IndexedData, TrainConfig, resolve_device
from gencond.engine.networks import real_data_network
from gencond.errors import GencondError
from gencond.evaluate.fidelity import class_fidelity
from gencond.evaluate.image_fidelity import FidelityExtractor, register_task_extractor
from gencond.evaluate.protocol import TrainingSet, format_rows, run_protocol
from gencond.evaluate.report import BenchmarkReport
from gencond.methods import get_method
from gencond.methods.codebook import CodebookConfig
from gencond.methods.dim import DiMConfig
from gencond.models import load_generator
from gencond.serve import sample_set
from gencond.training.trainer import KEPT_DIR
from gencond.training.validation import validation_score

CONFIGS = {"codebook": CodebookConfig, "dim": DiMConfig}
SCORES = ("validation accuracy", "class fidelity", "-FID")


def train_kept_states(args) -> tuple[object, list[Path], float]:
    """(the run's config, its kept generator folders in epoch order, training seconds; 0
    when the run was already there)."""
    cfg = config_with_sets(CONFIGS[args.method], args.config, args.set)
    cfg = dataclasses.replace(cfg, output_dir=str(Path(args.work_dir) / "run"), keep_every=args.keep_every,
                              validation_per_class=args.validation_per_class, sample_every=0)
    cfg.check()
    start, seconds = time.perf_counter(), 0.0
    if not (Path(cfg.output_dir) / "generator").is_dir():
        get_method(args.method).fn(cfg)
        seconds = time.perf_counter() - start
    kept = sorted((Path(cfg.output_dir) / KEPT_DIR).iterdir())
    return cfg, kept, seconds


def held_out_scores(generator, splits, net, extractor: FidelityExtractor, args, device) -> dict[str, float]:
    info, validation = splits.info, splits.validation
    drawn = sample_set(generator, args.validation_per_class, seed=args.seed)
    real, _ = validation.batch(torch.arange(len(validation)))
    fid = extractor.metrics(drawn.images, real, info, device, args.seed)["fid"]
    return {"validation accuracy": validation_score(generator, info, validation, args.validation_inpc,
                                                    args.validation_epochs, args.seed, device),
            "class fidelity": class_fidelity(generator, net, args.validation_per_class, args.seed),
            "-FID": -fid}


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=sorted(CONFIGS), default="codebook")
    parser.add_argument("--config", default="configs/codebook/digits.yaml")
    add_set_argument(parser)
    parser.add_argument("--work-dir", default="runs/bench_validation")
    parser.add_argument("--validation-per-class", type=int, default=20)
    parser.add_argument("--keep-every", type=int, default=5)
    parser.add_argument("--validation-inpc", type=int, default=10)
    parser.add_argument("--validation-epochs", type=int, default=100)
    parser.add_argument("--fidelity-net-epochs", type=int, default=10)
    parser.add_argument("--inpc", type=int, default=1, help="images per class of the fixed sets tested")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--eval-epochs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", default="experiments/validation_scores/bench_validation.json")
    args = parser.parse_args()
    if min(args.validation_per_class, args.keep_every, args.inpc, args.seeds) <= 0:
        raise GencondError("--validation-per-class, --keep-every, --inpc and --seeds must be positive")

    device = resolve_device(args.device)
    report = BenchmarkReport("validation", vars(args), device)
    cfg, kept, train_seconds = train_kept_states(args)
    splits = cfg.load_splits()  # the run's splits: its training images, the carved validation split, test
    info = splits.info
    net = real_data_network(splits.train, "convnet3", args.fidelity_net_epochs, device, args.seed)
    extractor = FidelityExtractor(register_task_extractor(net, info, f"{info.name}-convnet3-validation"))
    generators = {int(folder.name.split("_")[1]): load_generator(folder, device) for folder in kept}
    start = time.perf_counter()
    scores = {epoch: held_out_scores(g, splits, net, extractor, args, device) for epoch, g in generators.items()}
    score_seconds = time.perf_counter() - start
    for epoch, found in scores.items():
        print(f"epoch {epoch}: " + ", ".join(f"{k} {v:.2f}" for k, v in found.items()), flush=True)

    # Every score is computed: now, and only now, the test split.
    rows = [TrainingSet(f"epoch {epoch}", args.inpc,
                        lambda seed, g=g: IndexedData.from_condensed(sample_set(g, args.inpc, seed)))
            for epoch, g in generators.items()]
    results = run_protocol(splits, rows, ["convnet3"], args.seeds, TrainConfig(epochs=args.eval_epochs), device)
    epochs = list(generators)
    test = np.array([r.mean for r in results])
    analysis = {}
    for name in SCORES:
        values = np.array([scores[e][name] for e in epochs])
        picked = int(np.argmax(values))  # the earliest on ties
        rho = spearmanr(values, test).statistic
        analysis[name] = {"spearman": round(float(rho), 3), "picked_epoch": epochs[picked],
                          "picked_test": round(float(test[picked]), 2)}

    print(f"\n{info.name}: {len(splits.train)} train / {len(splits.validation)} validation / {len(splits.test)} test; "
          f"{args.method} ({args.config}), states every {args.keep_every} epochs; test: fixed INPC {args.inpc}, "
          f"ConvNet-3, {args.eval_epochs} epochs, {args.seeds} seeds, final accuracy; FID at N = "
          f"{len(splits.validation)} vs {len(splits.validation)} in ConvNet-3 features\n")
    print(format_rows(["epoch", *SCORES, "test"],
                      [[str(e), *(f"{scores[e][k]:.2f}" for k in SCORES), f"{r.mean:.2f} ± {r.std:.2f}"]
                       for e, r in zip(epochs, results)]))
    print()
    print(format_rows(["score", "Spearman vs test", "picks epoch", "its test"],
                      [[k, f"{a['spearman']:+.3f}", str(a["picked_epoch"]), f"{a['picked_test']:.2f}"]
                       for k, a in analysis.items()]
                      + [["(last state)", "", str(epochs[-1]), f"{test[-1]:.2f}"],
                         ["(best by test: reference only)", "", str(epochs[int(np.argmax(test))]), f"{test.max():.2f}"]]))
    report.add(dataset=info.to_dict(), validation_images=len(splits.validation), train_seconds=round(train_seconds, 1),
               score_seconds=round(score_seconds, 1), scores={str(e): s for e, s in scores.items()},
               results=[r.to_dict() for r in results], analysis=analysis, torch_threads=torch.get_num_threads())
    report.write(args.json)


if __name__ == "__main__":
    raise SystemExit(guarded(main, "bench_validation.py"))
