"""Codebook-generator benchmark: the method, its loss ablation and nested codebooks, beside
random real images, DM's pixel sets and DiM, in one run on one dataset (the MNIST subset
by default).

1. trains codebook generators from one config, one per variant (YAML overrides of it):
   by default the config itself (``nested``: K = 10 codes trained with nested prefixes),
   a separately trained K = 1 codebook, a K = 10 codebook without nesting, and the loss
   ablation of the paper's Table 8 at K = 10 (features only; + intra; + inter; the
   K = 10 run has both);
2. with ``--dm-config``, condenses DM pixel sets at every ``--inpc``; with
   ``--dim-config``, trains DiM, and then compares at equal cost both ways: the first
   codebook variant retrained for DiM's training seconds (``@ DiM time``) and DiM
   retrained for the codebook's generator steps (``@ codebook steps``, DiM's epochs kept,
   fewer steps each);
3. evaluates everything with ConvNet-3 from scratch, several seeds, final test accuracy:
   every codebook at every INPC it can serve among ``--inpc`` (a K-code codebook serves
   INPC <= K as its first codes; a nested one any INPC), generators named in ``--fresh``
   also under the fresh protocol, beside random real images at the same IPC;
4. reports per row its training seconds, generator steps and artifact bytes, and the
   generators' sampling speed.

    python -m experiments.codebook.bench_codebook --config configs/codebook/mnist_subset.yaml --json experiments/codebook/bench_codebook_mnist.json
    python -m experiments.codebook.bench_codebook --config configs/codebook/cifar10_subset.yaml --variant 'nested K10={}' \\
        --dm-config configs/dm/cifar10_subset.yaml --dim-config configs/dim/cifar10_subset.yaml \\
        --fresh 'nested K10' DiM --work-dir runs/bench_codebook_cifar10 --json experiments/codebook/bench_codebook_cifar10.json
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from gencond.cli import guarded
from gencond.config import (
    OneLineParser,
    config_from_dict,
    load_yaml,
    parse_variant,
    variant_in_folder,
)
from gencond.engine import TrainConfig, resolve_device
from gencond.errors import GencondError
from gencond.evaluate.protocol import (
    condensed_sets,
    format_table,
    generator_sets,
    run_protocol,
    selection_sets,
)
from gencond.evaluate.report import BenchmarkReport
from gencond.methods import get_method
from gencond.methods.base import condense_or_reuse
from gencond.methods.codebook import CodebookConfig
from gencond.methods.dim import DiMConfig
from gencond.methods.dm import DMConfig
from gencond.models import load_generator
from gencond.models.generators import WEIGHTS
from gencond.serve import sample_set
from gencond.training.trainer import reusable_generator, trained_generator

ABLATION = {"features only": {"intra_weight": 0.0, "inter_weight": 0.0},
            "features + intra": {"inter_weight": 0.0},
            "features + inter": {"intra_weight": 0.0}}
DEFAULT_VARIANTS = {"nested K=10": {}, "K=1": {"codebook_size": 1, "nested": False},
                    "K=10": {"codebook_size": 10, "nested": False},
                    **{name: {"codebook_size": 10, "nested": False, **o} for name, o in ABLATION.items()}}
DIM = "DiM"


def parse_variants(items: list[str]) -> dict[str, dict]:
    """``NAME={yaml mapping}`` items, or the default set when none is given."""
    return dict(map(parse_variant, items)) if items else DEFAULT_VARIANTS


def train_generator(method: str, cfg, reuse: bool) -> dict:
    """Train (or reuse) one generator; its folder, seconds, steps and artifact bytes."""
    out = Path(cfg.output_dir)
    if not (reuse and reusable_generator(method, cfg)):
        start = time.perf_counter()
        get_method(method).fn(cfg)
        (out / "bench_seconds.json").write_text(json.dumps({"seconds": time.perf_counter() - start}))
    if not (out / "bench_seconds.json").is_file():
        raise GencondError(f"--reuse: {out} has a generator but no bench_seconds.json (not trained by this "
                           "benchmark, so its training seconds are unknown); remove the folder or run without --reuse")
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    folder = trained_generator(out)
    return {"folder": folder, "train_seconds": round(json.loads((out / "bench_seconds.json").read_text())["seconds"], 1),
            "epoch_seconds": round(sum(r["seconds"] for r in log), 1), "generator_steps": sum(r["steps"] for r in log),
            "artifact_bytes": (folder / WEIGHTS).stat().st_size}


def condense_dm(cfg: DMConfig, ipcs: list[int], work: Path, reuse: bool) -> dict[int, dict]:
    """DM pixel sets (seed 0, evaluated with every seed, as the papers do); per IPC its
    file, condensation seconds and bytes at the stored precision."""
    sets = {}
    for ipc in ipcs:
        path = work / f"dm_ipc{ipc}.safetensors"
        seconds = condense_or_reuse("dm", dataclasses.replace(cfg, ipc=ipc, seed=0, output=str(path)), reuse).config[
            "condense_seconds"]
        sets[ipc] = {"file": str(path), "train_seconds": seconds, "artifact_bytes": path.stat().st_size}
    return sets


def equal_cost_variants(codebook_name: str, codebook: CodebookConfig, trained: dict, dim: DiMConfig,
                        work: Path, which: str = "both") -> dict[str, CodebookConfig | DiMConfig]:
    """DiM retrained for the codebook's generator steps (its epochs kept, the steps per
    epoch capped), and, with ``which="both"``, the codebook retrained for DiM's training
    seconds (epochs from its measured seconds per epoch) unless its own schedule is already
    within 10 % of them."""
    if which == "none":
        return {}
    steps = max(1, round(trained[codebook_name]["generator_steps"] / (dim.gan_epochs + dim.match_epochs)))
    natural = trained[DIM]["generator_steps"] / (dim.gan_epochs + dim.match_epochs)
    if steps >= natural:
        print(f"warning: the codebook's {steps} steps per DiM epoch are not fewer than DiM's own "
              f"{natural:.0f}; '{DIM} @ codebook steps' repeats DiM's schedule")
    variants = {f"{DIM} @ codebook steps": (DiMConfig, dim, {"steps_per_epoch": steps})}
    epochs = max(1, round(equal_time_epochs(trained[codebook_name], codebook.epochs, trained[DIM]["train_seconds"])))
    if which == "steps":
        print(f"{codebook_name} @ DiM time ({epochs} epochs) not trained (--equal-cost steps)")
    elif abs(epochs - codebook.epochs) > 0.1 * codebook.epochs:
        variants[f"{codebook_name} @ DiM time"] = (CodebookConfig, codebook, {"epochs": epochs})
    else:
        print(f"{codebook_name}: {codebook.epochs} epochs are within 10 % of DiM's training time ({epochs} epochs); not retrained")
    return {name: variant_in_folder(cls, cfg, name, o, work) for name, (cls, cfg, o) in variants.items()}


def equal_time_epochs(run: dict, epochs: int, seconds: float) -> float:
    """Epochs that make ``run``'s method train for ``seconds`` in all: its fixed cost (the
    feature network's pretraining, class features, export: total minus the logged epoch
    seconds) once, then its measured seconds per epoch."""
    fixed = run["train_seconds"] - run["epoch_seconds"]
    return (seconds - fixed) / (run["epoch_seconds"] / epochs)


def served_inpcs(cfg: CodebookConfig | DiMConfig, inpcs: list[int]) -> list[int]:
    """A K-code codebook serves INPC <= K as its first codes; a nested one and DiM any INPC."""
    if isinstance(cfg, CodebookConfig) and not cfg.nested:
        return [n for n in inpcs if n <= cfg.codebook_size]
    return inpcs


def row_label(name: str, cfg: CodebookConfig | DiMConfig) -> str:
    return f"codebook {name}" if isinstance(cfg, CodebookConfig) else name


def sampling_speed(generator, inpc: int = 50) -> float:
    sample_set(generator, 1)  # warm-up
    start = time.perf_counter()
    sample_set(generator, inpc, seed=1)
    return inpc * generator.info.num_classes / (time.perf_counter() - start)


def cost_columns(run: dict) -> dict[str, str]:
    return {"train s": f"{run['train_seconds']:.0f}", "steps": str(run.get("generator_steps", "-")),
            "bytes": f"{run['artifact_bytes']:,}"}


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/codebook/mnist_subset.yaml")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME={key: value, ...}",
                        help="codebooks to train, as overrides of --config (default: the nested, K=1, K=10 and ablation set)")
    parser.add_argument("--dm-config", help="DM config: also condense DM pixel sets at every --inpc")
    parser.add_argument("--dim-config", help="DiM config: also train DiM, and both at the other's cost")
    parser.add_argument("--equal-cost", choices=["both", "steps", "none"], default="both",
                        help="with --dim-config, the equal-cost retrainings: both ways, only DiM at the codebook's "
                             "generator steps (cheap), or none")
    parser.add_argument("--inpc", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--fresh", nargs="*", default=["nested K=10", DIM],
                        help="generators also evaluated under the fresh protocol")
    parser.add_argument("--ablation-inpc", type=int, default=10, help="the INPC at which ablation rows are evaluated")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--eval-epochs", type=int, default=300)
    parser.add_argument("--work-dir", default="runs/bench_codebook")
    parser.add_argument("--reuse", action="store_true", help="evaluate generators and sets already made in WORK_DIR")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", default="experiments/codebook/bench_codebook.json")
    args = parser.parse_args()

    device = resolve_device(args.device)
    report = BenchmarkReport("codebook", vars(args), device)
    work = Path(args.work_dir)
    cfg = config_from_dict(CodebookConfig, load_yaml(args.config), args.config)
    overrides = parse_variants(args.variant)
    configs = {name: variant_in_folder(CodebookConfig, cfg, name, o, work) for name, o in overrides.items()}
    splits = cfg.load_splits()
    trained = {name: train_generator("codebook", c, args.reuse) for name, c in configs.items()}
    dm = condense_dm(config_from_dict(DMConfig, load_yaml(args.dm_config), args.dm_config), args.inpc, work, args.reuse) \
        if args.dm_config else {}
    if args.dim_config:
        configs[DIM] = variant_in_folder(DiMConfig, config_from_dict(DiMConfig, load_yaml(args.dim_config), args.dim_config), DIM, {}, work)
        trained[DIM] = train_generator("dim", configs[DIM], args.reuse)
        first = next(iter(overrides))
        equal_cost = equal_cost_variants(first, configs[first], trained, configs[DIM], work, args.equal_cost)
        for name, c in equal_cost.items():
            configs[name] = c
            trained[name] = train_generator("codebook" if isinstance(c, CodebookConfig) else "dim", c, args.reuse)

    sets = selection_sets(splits, "random", args.inpc)
    costs = {}
    for (ipc, run), row in zip(dm.items(), condensed_sets(splits, [d["file"] for d in dm.values()])):
        row.name = "DM"
        sets.append(row)
        costs[(row.name, ipc)] = cost_columns(run)
    for name, run in trained.items():
        c = configs[name]
        inpcs = [args.ablation_inpc] if name in ABLATION else served_inpcs(c, args.inpc)
        protocols = ["fixed", "fresh"] if name in args.fresh else ["fixed"]
        for row in generator_sets(splits, str(run["folder"]), inpcs, protocols, device):
            row.name = row.name.replace("generator", row_label(name, c))
            sets.append(row)
            costs[(row.name, row.ipc)] = cost_columns(run)
        run["sampling_images_per_s"] = round(sampling_speed(load_generator(run["folder"], device)))
    results = run_protocol(splits, sets, ["convnet3"], args.seeds, TrainConfig(epochs=args.eval_epochs), device)

    print(f"\n{splits.info.name}: {len(splits.train)} train / {len(splits.test)} test; ConvNet-3 evaluation, "
          f"{args.eval_epochs} epochs, DSA, {args.seeds} seeds, final test accuracy; training seconds, generator "
          f"steps and artifact bytes of what each row evaluates\n")
    print(format_table(results, costs))
    print("\nsampling: " + ", ".join(f"{name} {run['sampling_images_per_s']} images/s" for name, run in trained.items()))
    report.add(dataset=splits.info.to_dict(), codebook_config=dataclasses.asdict(cfg),
               generators={name: {"config": dataclasses.asdict(configs[name]),
                                  **{k: (str(v) if k == "folder" else v) for k, v in run.items()}}
                           for name, run in trained.items()},
               dm_sets={str(ipc): run for ipc, run in dm.items()},
               results=[r.to_dict() for r in results], torch_threads=torch.get_num_threads())
    report.write(args.json)


if __name__ == "__main__":
    raise SystemExit(guarded(main, "bench_codebook.py"))
