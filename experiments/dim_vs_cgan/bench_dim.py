"""DiM benchmark: random real images vs. a conditional GAN vs. DiM, side by side.

One run, on one dataset (the MNIST subset by default), CPU-practical width:

1. trains the GAN phase for ``gan_epochs``; from that state it continues twice, once
   GAN-only (the cGAN baseline, same total steps) and once with logits matching (DiM),
   plus any ``--variant`` of DiM's config (ablations from the same GAN state);
2. trains a ConvNet-3 on the real training split and measures class fidelity (share of
   generated images it assigns to their label) for both generators;
3. evaluates random real selection (IPC) and both generators (INPC) under the fixed and
   the fresh protocol with ConvNet-3, several seeds, final test accuracy;
4. times sampling (images/s), and the phase-1 and phase-2 steps of the real training loop
   at the official width (196) and batch (64), to set beside the official code's.

    python -m experiments.dim_vs_cgan.bench_dim --config configs/dim/mnist_subset.yaml --json experiments/dim_vs_cgan/bench_dim_mnist.json
    python -m experiments.dim_vs_cgan.bench_dim --set gan_epochs=5 --variant 'log_softmax={match: log_softmax}' --protocols fixed
    python -m experiments.dim_vs_cgan.bench_dim --reuse-shared --branches dim --protocols fixed --speed-steps 0 \
        --variant 'log_softmax={match: log_softmax}' --json experiments/dim_vs_cgan/ablate_dim_mnist.json
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import torch

from experiments._common import add_set_argument
from gencond.cli import guarded
from gencond.config import (
    OneLineParser,
    config_with_sets,
    parse_variant,
    variant_config,
)
from gencond.data import load_dataset
from gencond.engine import RealBatchConfig
from gencond.engine.networks import test_accuracy, train_network
from gencond.evaluate import (
    IndexedData,
    TrainConfig,
    class_fidelity,
    format_table,
    resolve_device,
    run_protocol,
)
from gencond.evaluate.protocol import (
    generator_sets,
    selection_sets,
)
from gencond.evaluate.report import BenchmarkReport
from gencond.methods.dim import MATCHING_FIELDS, DiMConfig, train_dim
from gencond.models import create_network, load_generator
from gencond.serve import sample_set
from gencond.training.trainer import STATE_DIR, reusable_generator

OFFICIAL = {"phase1_step_s": 4.54, "phase2_step_s": 4.95, "sampling_images_per_s": 177}
BRANCH_LABELS = {"cgan": "cGAN", "dim": "DiM"}


def parse_variants(items: list[str], cfg: DiMConfig) -> dict[str, DiMConfig]:
    """``NAME={yaml mapping}`` -> DiM configs that differ from ``cfg`` by that mapping."""
    return {name: variant_config(DiMConfig, cfg, name, overrides) for name, overrides in map(parse_variant, items)}


def train_branches(cfg: DiMConfig, work: Path, branches: list[str], variants: dict[str, DiMConfig],
                   reuse_shared: bool, reuse_branches: bool = False) -> dict:
    """Shared GAN phase, then continuations from the same state: GAN-only (``cgan``, same
    total steps), matching (``dim``) and any matching variant. A reused GAN phase (``reuse_shared``:
    a finished one, from the same config up to the matching fields) or continuation
    (``reuse_branches``) must come from the same config, or one line says what differs."""
    timings = {}
    shared = dataclasses.replace(cfg, output_dir=str(work / "shared"), match_epochs=0)
    if not (reuse_shared and (work / "shared" / STATE_DIR).is_dir()
            and reusable_generator("dim", shared, ignore=MATCHING_FIELDS)):
        start = time.perf_counter()
        train_dim(shared)
        timings["shared_gan_phase_s"] = time.perf_counter() - start
    runs = {
        "cgan": dataclasses.replace(cfg, gan_epochs=cfg.gan_epochs + cfg.match_epochs, match_epochs=0),
        "dim": cfg,
    }
    runs = {**{name: runs[name] for name in branches}, **variants}
    folders = {}
    for name, run_cfg in runs.items():
        out = work / name
        run_cfg = dataclasses.replace(run_cfg, output_dir=str(out))
        if reuse_branches and (folder := reusable_generator("dim", run_cfg)):
            folders[name] = folder
            continue
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        shutil.copytree(work / "shared" / STATE_DIR, out / STATE_DIR)
        start = time.perf_counter()
        folders[name] = train_dim(run_cfg, resume=True)
        timings[f"{name}_continuation_s"] = time.perf_counter() - start
    return {"folders": folders, "timings": timings}


def real_classifier(splits, epochs: int, device) -> tuple[torch.nn.Module, float]:
    info = splits.info
    torch.manual_seed(0)
    net = create_network("convnet3", info.num_classes, info.channels, info.image_size)
    train_network(net, IndexedData.from_image_set(splits.train), TrainConfig(epochs=epochs, augment="none"), device)
    return net, test_accuracy(net, splits.test, device)


def sampling_speed(generator, inpc: int = 50, repeats: int = 3) -> float:
    sample_set(generator, 1)  # warm-up
    best = float("inf")
    for seed in range(repeats):
        start = time.perf_counter()
        sample_set(generator, inpc, seed)
        best = min(best, time.perf_counter() - start)
    return inpc * generator.info.num_classes / best


def step_times(cfg: DiMConfig, work: Path, pools: list[str], steps: int, precision: str) -> dict:
    """Seconds per step of the real training loop at the official width and batch:
    phase 1 (G + D step) and phase 2 (+ pool training + matching), one run per pool
    network. The first step of each epoch is excluded as warm-up."""
    result = {}
    for pool in pools:
        out = work / f"speed_{pool}_{precision}"
        shutil.rmtree(out, ignore_errors=True)
        speed_cfg = dataclasses.replace(cfg, output_dir=str(out), width=196, batch_size=64, gan_epochs=1,
                                        match_epochs=1, steps_per_epoch=steps + 1, pool=[pool],
                                        pool_training=RealBatchConfig(batches=16), mixed_precision=precision, sample_every=0)
        train_dim(speed_cfg)
        log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        result["phase1_step_s"] = result.get("phase1_step_s", log[0]["seconds_after_first_step"] / steps)
        result[f"phase2_step_s ({pool})"] = log[1]["seconds_after_first_step"] / steps
    return result


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/dim/mnist_subset.yaml")
    add_set_argument(parser, "override a field of the config (a YAML value) for every branch")
    parser.add_argument("--inpc", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--eval-epochs", type=int, default=300)
    parser.add_argument("--classifier-epochs", type=int, default=3, help="epochs of the real-data fidelity classifier")
    parser.add_argument("--fidelity-inpc", type=int, default=100)
    parser.add_argument("--speed-steps", type=int, default=3, help="timed steps per phase at width 196 (0 = skip)")
    parser.add_argument("--speed-pools", nargs="+", default=["convnet3", "resnet10_cifar"])
    parser.add_argument("--speed-precisions", nargs="+", default=["no"],
                        help="precisions to time (no, bf16), side by side in one run")
    parser.add_argument("--branches", nargs="*", default=["cgan", "dim"], choices=list(BRANCH_LABELS),
                        help="continuations of the shared GAN phase to train and evaluate")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME={key: value, ...}",
                        help="one more DiM continuation with these config overrides (repeatable)")
    parser.add_argument("--reuse-shared", action="store_true",
                        help="continue from WORK_DIR/shared if its GAN phase is already trained")
    parser.add_argument("--reuse-branches", action="store_true",
                        help="take continuations already trained in WORK_DIR as they are (implies --reuse-shared)")
    parser.add_argument("--protocols", nargs="*", default=["fixed", "fresh"], choices=["fixed", "fresh"],
                        help="evaluation protocols (none: class fidelity and sampling speed only)")
    parser.add_argument("--work-dir", default="runs/bench_dim")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--speed-only", action="store_true", help="only the width-196 timings")
    parser.add_argument("--json", default="experiments/dim_vs_cgan/bench_dim.json")
    args = parser.parse_args()

    cfg = config_with_sets(DiMConfig, args.config, args.set)
    work = Path(args.work_dir)
    device = resolve_device(args.device)
    report = BenchmarkReport("dim", vars(args), device)
    report.add(dim_config=dataclasses.asdict(cfg), official_code=OFFICIAL)
    if not args.speed_only:
        report.add(**quality(cfg, args, work, device))
    speed = {}
    for precision in args.speed_precisions if args.speed_steps else []:
        speed[precision] = step_times(cfg, work, args.speed_pools, args.speed_steps, precision)
        official_width = load_generator(work / f"speed_{args.speed_pools[0]}_{precision}" / "generator", device)
        speed[precision]["sampling_images_per_s (width 196, fp32)"] = sampling_speed(official_width)
        print(f"speed at width 196, batch 64, mixed_precision={precision}: "
              + ", ".join(f"{k} {v:.2f}" for k, v in speed[precision].items()))
    if speed:
        print(f"official code on this machine: {OFFICIAL}")
    report.add(speed_width196=speed)
    report.write(args.json)


def quality(cfg: DiMConfig, args, work: Path, device) -> dict:
    """Train both generators, measure class fidelity and sampling speed, evaluate everything."""
    splits = load_dataset(cfg.dataset, cfg.data_root)
    branches = train_branches(cfg, work, args.branches, parse_variants(args.variant, cfg),
                              args.reuse_shared or args.reuse_branches, args.reuse_branches)
    generators = {name: load_generator(folder, device) for name, folder in branches["folders"].items()}

    classifier, classifier_acc = real_classifier(splits, args.classifier_epochs, device)
    fidelity = {name: class_fidelity(g, classifier, args.fidelity_inpc) for name, g in generators.items()}
    throughput = {name: sampling_speed(g) for name, g in generators.items()}

    sets = selection_sets(splits, "random", args.inpc) if args.protocols else []
    for name, folder in branches["folders"].items():
        for row in generator_sets(splits, str(folder), args.inpc, args.protocols, device):
            row.name = row.name.replace("generator", BRANCH_LABELS.get(name, f"DiM [{name}]"))
            sets.append(row)
    results = run_protocol(splits, sets, ["convnet3"], args.seeds, TrainConfig(epochs=args.eval_epochs), device) \
        if sets else []

    print(f"\n{splits.info.name}: {len(splits.train)} train / {len(splits.test)} test; generators of width {cfg.width}, "
          f"{cfg.gan_epochs} GAN epochs + {cfg.match_epochs} (DiM: matching; cGAN: GAN) epochs; "
          f"ConvNet-3 evaluation, {args.eval_epochs} epochs, DSA, {args.seeds} seeds\n")
    if results:
        print(format_table(results))
    print(f"\nclass fidelity ({args.fidelity_inpc} images per class, ConvNet-3 trained on real data: "
          f"{classifier_acc:.2f}% test accuracy): " + ", ".join(f"{k} {v:.1f}%" for k, v in fidelity.items()))
    print("training wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in branches["timings"].items()))
    print("sampling: " + ", ".join(f"{k} {v:.0f} images/s" for k, v in throughput.items()) + f" (width {cfg.width})")
    return {
        "results": [r.to_dict() for r in results],
        "class_fidelity_percent": fidelity,
        "fidelity_classifier_test_accuracy": classifier_acc,
        "training_seconds": branches["timings"],
        "sampling_images_per_s": throughput,
    }


if __name__ == "__main__":
    raise SystemExit(guarded(main, "bench_dim.py"))
