"""Baselines benchmark: coreset selection and pixel condensation, side by side, one evaluation.

Selection methods (random, herding, k-center, KMeans-emb) pick real images per evaluation
seed; pixel methods (DM, DSA, DC, IDC) condense once (seed 0) from their config under
``configs/METHOD/CONFIG.yaml`` and the set is evaluated with every seed, as the papers do.
Every set trains ConvNet-3 from scratch with the same recipe (DSA, final test accuracy);
the table adds the condensation wall time, and the DiM rows of the DiM benchmark when its
JSON is given.

    python -m experiments.baselines.bench_baselines --ipc 1 10 --seeds 3 --json experiments/baselines/bench_baselines_mnist.json \
        --iterations dm:1=300 dm:10=100 dsa:1=40 dsa:10=4 idc:1=4 idc:10=2
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

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
from gencond.methods.coresets import SelectionConfig, class_embeddings

PAPER_MNIST = {"random": (64.9, 95.1), "herding": (89.2, 93.7), "dc": (91.7, 97.4), "dsa": (88.7, 97.8),
               "dm": (89.7, 97.5)}


def parse_iterations(items: list[str]) -> dict[tuple[str, int], int]:
    """``METHOD:IPC=N`` -> {(method, ipc): N}."""
    out = {}
    for item in items:
        try:
            key, n = item.split("=")
            method, ipc = key.split(":")
            out[(method, int(ipc))] = int(n)
        except ValueError:
            raise GencondError(f"--iterations expects METHOD:IPC=N, got {item!r}") from None
    return out


def method_config(args, method: str, ipc: int, iterations: dict):
    folder = "coresets" if get_method(method).kind == "selection" else method
    path = Path(args.config_dir) / folder / f"{args.config_name}.yaml"
    cfg = config_from_dict(get_method(method).config, load_yaml(path), str(path))
    cfg = dataclasses.replace(cfg, ipc=ipc, seed=0, device=args.device, output="")
    if (method, ipc) in iterations:
        cfg = dataclasses.replace(cfg, iterations=iterations[(method, ipc)])
    return cfg


def selection_rows(args, splits, timings: dict) -> list[TrainingSet]:
    """Each seed selects again; the shared embedding network trains once per seed (timed
    apart), so the times below are the selection proper."""
    train = splits.train
    cfg = method_config(args, args.selection[0], args.ipc[0], {}) if args.selection else SelectionConfig()
    for seed in range(args.seeds):
        if any(m != "random" for m in args.selection):
            start = time.perf_counter()
            class_embeddings(train, cfg, seed)
            timings.setdefault("embedding network (trained per seed)", []).append(time.perf_counter() - start)
    rows = []
    for method in args.selection:
        for ipc in args.ipc:
            select = get_method(method, "selection").fn

            def make(seed, method=method, ipc=ipc, select=select):
                start = time.perf_counter()
                picks = select(train, ipc, seed, dataclasses.replace(cfg, ipc=ipc))
                timings.setdefault(f"{method}|{ipc}", []).append(time.perf_counter() - start)
                return IndexedData.from_tensors(*train.batch(picks))

            rows.append(TrainingSet(method, ipc, make))
    return rows


def pixel_rows(args, splits, timings: dict, iterations: dict, work: Path) -> list[TrainingSet]:
    rows = []
    for method in args.pixel:
        for ipc in args.ipc:
            cfg = method_config(args, method, ipc, iterations)
            print(f"\n== {method}, IPC {ipc}: {cfg.iterations} iterations", flush=True)
            start = time.perf_counter()
            condensed = run_method(method, cfg, splits)
            timings[f"{method}|{ipc}"] = [time.perf_counter() - start]
            condensed.save(work / f"{method}_ipc{ipc}.safetensors")
            data = IndexedData.from_condensed(condensed)
            rows.append(TrainingSet(method, ipc, lambda seed, d=data: d))
    return rows


def dim_rows(path: str) -> list[dict]:
    if not path or not Path(path).is_file():
        return []
    report = json.loads(Path(path).read_text())
    seconds = report.get("training_seconds", {})
    return [{**r, "training_seconds": seconds} for r in report.get("results", [])
            if r["training_set"].startswith(("DiM", "cGAN"))]


def table(results, timings: dict, dim: list[dict], paper: bool) -> str:
    header = ["method", "IPC", "ConvNet-3 accuracy (%)", "condense s"] + (["paper, full MNIST"] if paper else [])
    lines = []
    for r in results:
        t = timings.get(f"{r.name}|{r.ipc}")
        reference = PAPER_MNIST.get(r.name)
        ref = f"{reference[0 if r.ipc == 1 else 1]}" if reference and r.ipc in (1, 10) else "-"
        lines.append([r.name, str(r.ipc), f"{r.mean:.2f} ± {r.std:.2f}", f"{np.mean(t):.1f}" if t else "-"]
                     + ([ref] if paper else []))
    for r in dim:
        acc = np.array(r["accuracies"])
        lines.append([f"{r['training_set']} (bench_dim)", str(r["ipc"]), f"{acc.mean():.2f} ± {acc.std():.2f}", "see DiM"]
                     + (["-"] if paper else []))
    widths = [max(len(row[i]) for row in [header] + lines) for i in range(len(header))]
    fmt = lambda row: " | ".join(v.ljust(w) for v, w in zip(row, widths))
    return "\n".join([fmt(header), "-+-".join("-" * w for w in widths)] + [fmt(row) for row in lines])


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--config-dir", default="configs")
    parser.add_argument("--config-name", default="mnist_subset", help="configs/METHOD/NAME.yaml")
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--selection", nargs="*", default=["random", "herding", "kcenter", "kmeans"])
    parser.add_argument("--pixel", nargs="*", default=["dm", "dsa", "idc"])
    parser.add_argument("--iterations", nargs="*", default=["dm:1=300", "dm:10=100", "dsa:1=40", "dsa:10=3", "idc:1=2", "idc:10=1"],
                        help="METHOD:IPC=N overrides of the configs (CPU-practical defaults)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--eval-epochs", type=int, default=300)
    parser.add_argument("--dim-json", default="experiments/dim_vs_cgan/bench_dim_mnist.json", help="DiM rows to show alongside")
    parser.add_argument("--work-dir", default="runs/bench_baselines")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", default="experiments/baselines/bench_baselines.json")
    args = parser.parse_args()

    device = resolve_device(args.device)
    report = BenchmarkReport("baselines", vars(args), device)
    splits = load_dataset(args.dataset, args.data_root)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, list[float]] = {}
    sets = selection_rows(args, splits, timings) + pixel_rows(args, splits, timings, parse_iterations(args.iterations), work)
    results = run_protocol(splits, sets, ["convnet3"], args.seeds, TrainConfig(epochs=args.eval_epochs), device)
    dim = dim_rows(args.dim_json)

    print(f"\n{splits.info.name}: {len(splits.train)} train / {len(splits.test)} test; ConvNet-3, "
          f"{args.eval_epochs} epochs, DSA, {args.seeds} seeds, final accuracy\n")
    print(table(results, timings, dim, paper=args.dataset == "mnist"))
    embedding = timings.get("embedding network (trained per seed)")
    if embedding:
        print(f"\nembedding network of herding / k-center / KMeans-emb: {np.mean(embedding):.1f} s per seed (not in the times above)")
    report.add(condense_seconds=dict(timings), results=[r.to_dict() for r in results], dim_rows=dim,
               paper_full_mnist=PAPER_MNIST)
    report.write(args.json)


if __name__ == "__main__":
    raise SystemExit(guarded(main, "bench_baselines.py"))
