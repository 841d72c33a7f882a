"""Codebook-generator benchmark: the method, its loss ablation and nested codebooks, beside
random real images, in one run on one dataset (the MNIST subset by default).

1. trains codebook generators from one config, one per variant (YAML overrides of it):
   by default the config itself (``nested``: K = 10 codes trained with nested prefixes),
   a separately trained K = 1 codebook, a K = 10 codebook without nesting, and the loss
   ablation of the paper's Table 8 at K = 10 (features only; + intra; + inter; the
   K = 10 run has both);
2. evaluates them with ConvNet-3 from scratch, several seeds, final test accuracy:
   every codebook at every INPC it can serve among ``--inpc`` (a K-code codebook serves
   INPC <= K as its first codes; the nested one also any INPC, under the fixed and the
   fresh protocol), beside random real images at the same IPC;
3. reports per generator its training seconds, generator steps, artifact bytes and
   sampling speed, then the table.

    python scripts/bench_codebook.py --config configs/codebook/mnist_subset.yaml --json results/bench_codebook_mnist.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from gencond.artifacts import load_generator
from gencond.config import config_from_dict, load_yaml
from gencond.evaluate.protocol import generator_sets, run_protocol, selection_sets
from gencond.evaluate.report import (
    BenchmarkReport,
    format_table,
    parse_variant,
    variant_config,
)
from gencond.methods.codebook import CodebookConfig, train_codebook
from gencond.serve import sample_set
from gencond.training import TrainConfig, resolve_device

ABLATION = {"features only": {"intra_weight": 0.0, "inter_weight": 0.0},
            "features + intra": {"inter_weight": 0.0},
            "features + inter": {"intra_weight": 0.0}}
DEFAULT_VARIANTS = {"nested K=10": {}, "K=1": {"codebook_size": 1, "nested": False},
                    "K=10": {"codebook_size": 10, "nested": False},
                    **{name: {"codebook_size": 10, "nested": False, **o} for name, o in ABLATION.items()}}


def parse_variants(items: list[str]) -> dict[str, dict]:
    """``NAME={yaml mapping}`` items, or the default set when none is given."""
    return dict(map(parse_variant, items)) if items else DEFAULT_VARIANTS


def codebook_variant(cfg: CodebookConfig, name: str, overrides: dict, work: Path) -> CodebookConfig:
    folder = name.replace(" ", "_").replace("=", "").replace("+", "plus")
    return variant_config(CodebookConfig, cfg, name, {**overrides, "output_dir": str(work / folder)})


def train_variant(cfg: CodebookConfig, reuse: bool) -> dict:
    """Train (or reuse) one codebook; its folder, seconds, steps and artifact bytes."""
    out = Path(cfg.output_dir)
    if not (reuse and (out / "generator" / "model.safetensors").is_file()):
        start = time.perf_counter()
        train_codebook(cfg)
        (out / "bench_seconds.json").write_text(json.dumps({"seconds": time.perf_counter() - start}))
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return {"folder": out / "generator", "train_seconds": round(json.loads((out / "bench_seconds.json").read_text())["seconds"], 1),
            "generator_steps": sum(r["steps"] for r in log),
            "artifact_bytes": (out / "generator" / "model.safetensors").stat().st_size}


def sampling_speed(generator, inpc: int = 50) -> float:
    sample_set(generator, 1)  # warm-up
    start = time.perf_counter()
    sample_set(generator, inpc, seed=1)
    return inpc * generator.info.num_classes / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/codebook/mnist_subset.yaml")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME={key: value, ...}",
                        help="codebooks to train, as overrides of --config (default: the nested, K=1, K=10 and ablation set)")
    parser.add_argument("--inpc", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--fresh", nargs="*", default=["nested K=10"], help="variants also evaluated under the fresh protocol")
    parser.add_argument("--ablation-inpc", type=int, default=10, help="the INPC at which ablation rows are evaluated")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--eval-epochs", type=int, default=300)
    parser.add_argument("--work-dir", default="runs/bench_codebook")
    parser.add_argument("--reuse", action="store_true", help="evaluate generators already trained in WORK_DIR")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", default="results/bench_codebook.json")
    args = parser.parse_args()

    device = resolve_device(args.device)
    report = BenchmarkReport("codebook", vars(args), device)
    cfg = config_from_dict(CodebookConfig, load_yaml(args.config), args.config)
    variants = {name: codebook_variant(cfg, name, o, Path(args.work_dir)) for name, o in parse_variants(args.variant).items()}
    splits = cfg.load_splits()
    trained = {name: train_variant(v, args.reuse) for name, v in variants.items()}

    sets = selection_sets(splits, "random", args.inpc)
    for name, run in trained.items():
        k = variants[name].codebook_size
        ablation = name in ABLATION
        inpcs = [args.ablation_inpc] if ablation else [n for n in args.inpc if n <= k or variants[name].nested]
        protocols = ["fixed", "fresh"] if name in args.fresh else ["fixed"]
        for row in generator_sets(splits, str(run["folder"]), inpcs, protocols, device):
            row.name = row.name.replace("generator", f"codebook {name}")
            sets.append(row)
        run["sampling_images_per_s"] = round(sampling_speed(load_generator(run["folder"], device)))
    results = run_protocol(splits, sets, ["convnet3"], args.seeds, TrainConfig(epochs=args.eval_epochs), device)

    print(f"\n{splits.info.name}: {len(splits.train)} train / {len(splits.test)} test; ConvNet-3 evaluation, "
          f"{args.eval_epochs} epochs, DSA, {args.seeds} seeds, final test accuracy\n")
    print(format_table(results))
    print("\ngenerators:")
    for name, run in trained.items():
        print(f"  {name}: {run['train_seconds']:.0f} s training, {run['generator_steps']} steps, "
              f"{run['artifact_bytes']:,} bytes, {run['sampling_images_per_s']} images/s")
    report.add(dataset=splits.info.to_dict(), codebook_config=dataclasses.asdict(cfg),
               variants={name: {"overrides": o, **{k: (str(v) if k == "folder" else v) for k, v in trained[name].items()}}
                         for name, o in parse_variants(args.variant).items()},
               results=[r.to_dict() for r in results], torch_threads=torch.get_num_threads())
    report.write(args.json)


if __name__ == "__main__":
    main()
