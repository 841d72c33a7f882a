"""Training steps side by side with the official code on this machine: seconds per DM
iteration and per DiM step of each code, their ratio, the FLOPs each step runs (counted, so
the two are seen to do the same work) and the floor those FLOPs put on it at this CPU's
faster rate: a large matrix product's or ConvNet-3's middle convolution's, measured before
and after.

DM (``--official-dm``): the official ``main_DM.py`` (github.com/VICO-UoE/DatasetCondensation,
with the local CPU patch that stays outside this project; see this folder's README) is imported and its
``main()`` runs unchanged; two probes stamp the clock: an iteration starts when it calls
``get_network`` (once per iteration with ``--num_eval 0``) and ends when the image
optimiser's ``step`` returns. gencond's side runs ``dm_iteration``, the function ``gencond
condense dm`` loops over, from the same config.

DiM (``--official-dim``): the official ``train()`` of ``gen_condense.py`` (phase 1: generator
step, critic step with gradient penalty) and of ``pool_match.py`` (phase 2: the same with
the pool network trained on 16 real batches and logit matching on augmented pairs;
github.com/vimar-gu/DiM, CPU-patched) runs unchanged on MNIST at the official width 196 and
batch 64, its models and optimisers built as its ``__main__`` builds them. Its outer loader
is replaced by the first N + 1 batches of its own loader, handed over one by one so the
clock is stamped around each loop body; the pool network's 16 batches come from its own
DataLoader, as in the official run. gencond's side runs ``DiMTrainer`` at the same width,
batch and pool network (ConvNet-3, 16 batches) through the shared generator trainer, at the
config's precision (``auto`` in the shipped config: bf16 autocast on a CPU with native bf16,
fp32 elsewhere; ``--dim-set mixed_precision=no`` forces fp32; the official code runs fp32).
DM's real forward likewise runs at its config's ``mixed_precision``. The table and JSON
name the precision gencond's side ran in.

The first step of each is the warm-up, where FLOPs are counted; the others are timed.
Every measurement is a process of its own (same threads, fresh allocator), and the two
codes alternate (official first in even repeats, gencond first in odd ones), so drift on the
machine falls on both.

    python -m experiments.speed_vs_official.speed_vs_official --official-dm ../official/DatasetCondensation \\
        --official-dim ../official/DiM --ipc 1 10 --iterations 10 --repeats 3 --json experiments/speed_vs_official/speed_vs_official.json
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from experiments._common import add_set_argument, cpu_rates
from gencond.cli import guarded
from gencond.config import OneLineParser, config_with_sets
from gencond.errors import GencondError
from gencond.evaluate.protocol import format_rows
from gencond.evaluate.report import BenchmarkReport
from gencond.methods.dim import DiMConfig, DiMTrainer
from gencond.methods.dm import DMConfig, dm_iteration, real_forward_precision
from gencond.methods.pixel import ImageTrainer
from gencond.runtime import keep_freed_memory
from gencond.training.profiling import FlopCounter, measure_steps, step_config

RESULT_PREFIX = "SPEED_RESULT "
SIDES = ("official", "gencond")
OFFICIAL_DIM_FILES = ("gan_model.py", "gen_condense.py", "pool_match.py")
# The official DiM scripts' settings for MNIST (their argparse defaults but batch 64, the paper's,
# and no loader worker processes: 2 cores), and phase 2's `pool_match.py --match logit --match-aug`
# with a ConvNet pool network trained 16 batches a step.
OFFICIAL_DIM_ARGS = dict(data="mnist", num_classes=10, dim_noise=100, batch_size=64, num_workers=0, print_freq=50,
                         aug_type="color_crop_cutout", mixup_net="cut", bias=False, fc=False, mix_p=-1.0, beta=1.0,
                         seed=3407)
OFFICIAL_MATCH_ARGS = dict(match="logit", match_aug=True, epochs_match_train=16, match_model="convnet", eval_lr=0.01,
                           momentum=0.9, weight_decay=5e-4, metric="l1", match_coeff=0.001)
OFFICIAL_PHASES = {1: ("gen_condense", 1e-4, {}), 2: ("pool_match", 5e-6, OFFICIAL_MATCH_ARGS)}
# gencond's DiM at the official run's shapes
OFFICIAL_DIM_SHAPE = ["width=196", "batch_size=64", "match_batch=64", "pool=[convnet3]", "pool_training.batches=16"]


def dm_label(ipc: int) -> str:
    return f"DM, IPC {ipc}"


def official_dm(official_dir: str, ipc: int, iterations: int, data_root: str) -> dict[str, dict]:
    """Seconds of iterations 1..N of the official ``main_DM.main()`` and the FLOPs of iteration 0."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    sys.path.insert(0, official_dir)
    import main_DM  # the official script

    counter, starts, ends = FlopCounter(), [], []
    build_network = main_DM.get_network

    def started(*args, **kwargs):
        if not starts:
            counter.__enter__()
        starts.append(time.perf_counter())
        return build_network(*args, **kwargs)

    def stepped(optimizer, args, kwargs):
        ends.append(time.perf_counter())
        if len(ends) == 1:
            counter.__exit__(None, None, None)

    main_DM.get_network = started
    register_optimizer_step_post_hook(stepped)
    sys.argv = ["main_DM.py", "--dataset", "MNIST", "--model", "ConvNet", "--ipc", str(ipc), "--Iteration",
                str(iterations), "--num_exp", "1", "--num_eval", "0", "--batch_real", "256", "--init", "real",
                "--data_path", data_root, "--save_path", tempfile.mkdtemp(prefix="dm_official_")]
    main_DM.main()
    seconds = [end - start for start, end in zip(starts[1:], ends[1:])]
    return {dm_label(ipc): {"seconds": seconds, "flops": counter.flops}}


def gencond_dm(config: str, ipc: int, iterations: int, data_root: str, sets: list[str]) -> dict[str, dict]:
    """Seconds of iterations 1..N of gencond's DM from ``config`` and the FLOPs of iteration 0."""
    cfg = config_with_sets(DMConfig, config, [f"ipc={ipc}", f"data_root={data_root}", *sets])
    keep_freed_memory()  # as `gencond condense dm` does
    trainer = ImageTrainer(cfg, cfg.load_splits().train, torch.device("cpu"))
    precision = real_forward_precision(cfg, trainer.device)
    with FlopCounter() as counter:
        dm_iteration(trainer, precision)
    seconds = []
    for _ in range(iterations):
        start = time.perf_counter()
        dm_iteration(trainer, precision)
        seconds.append(time.perf_counter() - start)
    return {dm_label(ipc): {"seconds": seconds, "flops": counter.flops, "precision": "fp32" if precision == "no" else precision}}


class StampedBatches:
    """The official DiM ``train()``'s outer loader: hands over prefetched real batches and
    times each loop body (the first one under the FLOP counter). Any later iteration (phase
    2's pool network, inside the body) is served by the official DataLoader itself."""

    def __init__(self, batches: list, loader):
        self.batches, self.loader, self.outer_started = batches, loader, False
        self.seconds, self.counter = [], FlopCounter()

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        if self.outer_started:
            return iter(self.loader)
        self.outer_started = True
        return self.outer()

    def outer(self):
        for index, batch in enumerate(self.batches):
            counting = self.counter if index == 0 else None
            if counting:
                counting.__enter__()
            start = time.perf_counter()
            yield batch
            self.seconds.append(time.perf_counter() - start)
            if counting:
                counting.__exit__(None, None, None)


def official_dim(official_dir: str, steps: int, data_root: str) -> dict[str, dict]:
    """Per phase, seconds of steps 1..N of the official DiM ``train()`` and the FLOPs of step 0."""
    sys.path.insert(0, official_dir)
    gan_model = importlib.import_module("gan_model")
    results = {}
    for phase, (script, lr, extra) in OFFICIAL_PHASES.items():
        module = importlib.import_module(script)
        args = argparse.Namespace(**OFFICIAL_DIM_ARGS, **extra, data_dir=data_root, lr=lr)
        random.seed(args.seed)
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)
        if hasattr(module, "define_model"):  # pool_match draws the pool network at random: take args.match_model
            draw = module.define_model
            module.define_model = lambda args, num_classes, e_model=None: draw(args, num_classes,
                                                                                e_model or args.match_model)
        loader, _ = module.load_data(args)
        batches = StampedBatches(list(itertools.islice(loader, steps + 1)), loader)
        generator, critic = gan_model.Generator(args).to(module.DEVICE), gan_model.Discriminator(args).to(module.DEVICE)
        optim_g = torch.optim.Adam(generator.parameters(), lr=args.lr, betas=(0.0, 0.9))
        optim_d = torch.optim.Adam(critic.parameters(), lr=args.lr, betas=(0.0, 0.9))
        aug, aug_rand = module.diffaug(args)
        generator.train()
        critic.train()
        module.train(args, 0, generator, critic, optim_g, optim_d, batches, torch.nn.CrossEntropyLoss(), aug, aug_rand)
        results[f"DiM phase {phase}"] = {"seconds": batches.seconds[1:], "flops": batches.counter.flops}
    return results


def gencond_dim(config: str, steps: int, data_root: str, sets: list[str]) -> dict[str, dict]:
    """Per phase, seconds of steps 1..N of gencond's DiM trainer and the FLOPs of step 0."""
    cfg = config_with_sets(DiMConfig, config, [f"data_root={data_root}", *OFFICIAL_DIM_SHAPE, *sets])
    with tempfile.TemporaryDirectory(prefix="dim_gencond_") as work:  # at the config's precision and compile
        phases, _, _ = measure_steps(DiMTrainer, step_config(cfg, steps, work))
    return {f"DiM phase {phase}": {"seconds": record["seconds"], "flops": record["flops"],
                                   "precision": "bf16" if record["precision"] == "bf16" else "fp32"}
            for phase, record in sorted(phases.items())}


def measure(args, side: str, method: str, ipc: int) -> dict[str, dict]:
    """One side's measurement in a fresh process at ``args.threads`` threads."""
    cmd = [sys.executable, __file__, "--child", side, "--child-method", method, "--ipc", str(ipc),
           "--iterations", str(args.iterations), "--threads", str(args.threads), "--data-root", args.data_root,
           "--official-dm", args.official_dm or "", "--official-dim", args.official_dim or "",
           "--dm-config", args.dm_config, "--dim-config", args.dim_config,
           *[flag for item in args.dm_set for flag in ("--dm-set", item)],
           *[flag for item in args.dim_set for flag in ("--dim-set", item)]]
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        what = f"DM measurement at IPC {ipc}" if method == "dm" else "DiM measurement"
        raise GencondError(f"the {side} {what} failed: {last}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def child(args) -> None:
    torch.set_num_threads(args.threads)
    (ipc,) = args.ipc
    if args.child_method == "dim":
        result = (official_dim(args.official_dim, args.iterations, args.data_root) if args.child == "official"
                  else gencond_dim(args.dim_config, args.iterations, args.data_root, args.dim_set))
    elif args.child == "official":
        result = official_dm(args.official_dm, ipc, args.iterations, args.data_root)
    else:
        result = gencond_dm(args.dm_config, ipc, args.iterations, args.data_root, args.dm_set)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def summary(runs: list[dict], rate: float) -> dict:
    """Median seconds per step of each run, their mean and spread, FLOPs and floor."""
    medians = [statistics.median(run["seconds"]) for run in runs]
    flops = runs[0]["flops"]
    return {"seconds_per_step": statistics.mean(medians), "std": statistics.stdev(medians) if len(medians) > 1 else 0.0,
            "run_medians": medians, "gflop_per_step": flops / 1e9, "floor_seconds": flops / rate, "runs": runs}


def check_arguments(args) -> None:
    """Every bad argument ends here with one line, before any child starts."""
    if min(args.ipc + [args.iterations, args.repeats, args.threads]) < 1:
        raise GencondError("--ipc, --iterations, --repeats and --threads must be positive")
    if not (args.official_dm or args.official_dim):
        raise GencondError("name an official checkout: --official-dm and/or --official-dim")
    if args.official_dm and not Path(args.official_dm, "main_DM.py").is_file():
        raise GencondError(f"{args.official_dm}: no main_DM.py (a DatasetCondensation checkout)")
    missing = [name for name in OFFICIAL_DIM_FILES if args.official_dim and not Path(args.official_dim, name).is_file()]
    if missing:
        raise GencondError(f"{args.official_dim}: no {', '.join(missing)} (a DiM checkout)")
    if args.official_dm:
        config_with_sets(DMConfig, args.dm_config, args.dm_set)
    if args.official_dim:
        config_with_sets(DiMConfig, args.dim_config, [*OFFICIAL_DIM_SHAPE, *args.dim_set])


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-dm", help="a checkout of VICO-UoE/DatasetCondensation (CPU-patched): time DM")
    parser.add_argument("--official-dim", help="a checkout of vimar-gu/DiM (CPU-patched): time DiM's two phases")
    parser.add_argument("--dm-config", default="configs/dm/mnist_subset.yaml", help="gencond's DM config")
    parser.add_argument("--dim-config", default="configs/dim/mnist_subset.yaml",
                        help="gencond's DiM config (run at width 196, batch 64, pool ConvNet-3 trained 16 batches)")
    parser.add_argument("--data-root", default="../shared/data", help="holds MNIST/raw, read by both codes")
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 10], help="DM's images per class")
    parser.add_argument("--iterations", type=int, default=10,
                        help="timed DM iterations or DiM steps per phase and run, after one warm-up")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each code per case, alternating")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    add_set_argument(parser, "override a field of gencond's DM config (a YAML value)", "--dm-set")
    add_set_argument(parser, "override a field of gencond's DiM config (a YAML value)", "--dim-set")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--child-method", choices=("dm", "dim"), help=argparse.SUPPRESS)
    parser.add_argument("--json", default="experiments/speed_vs_official/speed_vs_official.json")
    args = parser.parse_args()
    if args.child:
        return child(args)
    check_arguments(args)

    torch.set_num_threads(args.threads)
    report = BenchmarkReport("training steps beside the official code", vars(args), torch.device("cpu"))
    rates = {kind: [rate] for kind, rate in cpu_rates().items()}  # measured before and after the runs
    jobs = [("dm", ipc) for ipc in args.ipc if args.official_dm] + ([("dim", 0)] if args.official_dim else [])
    runs = {}
    for repeat in range(args.repeats):
        for method, ipc in jobs:
            for side in SIDES if repeat % 2 == 0 else SIDES[::-1]:
                for label, result in measure(args, side, method, ipc).items():
                    runs.setdefault(label, {s: [] for s in SIDES})[side].append(result)
                    print(f"repeat {repeat}, {label}, {side}: {statistics.median(result['seconds']):.3f} s per step",
                          flush=True)
    for kind, rate in cpu_rates().items():
        rates[kind].append(rate)
    gflops = {kind: statistics.mean(values) / 1e9 for kind, values in rates.items()}
    rate = max(gflops.values()) * 1e9

    rows, table = [], []
    for label, sides in runs.items():
        theirs, ours = summary(sides["official"], rate), summary(sides["gencond"], rate)
        ratio = ours["seconds_per_step"] / theirs["seconds_per_step"]
        precision = sides["gencond"][0]["precision"]
        rows.append({"case": label, "official": theirs, "gencond": ours, "gencond_precision": precision, "ratio": ratio})
        table.append([label, f"{theirs['seconds_per_step']:.3f} ± {theirs['std']:.3f}",
                      f"{ours['seconds_per_step']:.3f} ± {ours['std']:.3f} ({precision})", f"{ratio:.2f}x",
                      f"{theirs['gflop_per_step']:.0f} / {ours['gflop_per_step']:.0f}", f"{ours['floor_seconds']:.3f}",
                      f"{theirs['seconds_per_step'] / theirs['floor_seconds']:.1f}x / "
                      f"{ours['seconds_per_step'] / ours['floor_seconds']:.1f}x"])
    print(f"\nMNIST; DM: batch_real 256; DiM: width 196, batch 64. {args.iterations} timed steps per run, "
          f"{args.repeats} runs per code (mean ± std of run medians), {args.threads} thread(s); fp32 GFLOP/s: "
          f"matrix product {gflops['matmul']:.0f}, ConvNet-3 convolution {gflops['conv']:.0f} "
          "(the floor uses the faster)\n")
    print(format_rows(["step", "official s", "gencond s", "gencond / official", "GFLOP (official / gencond)",
                       "floor s", "over floor (official / gencond)"], table))
    report.add(gflops={kind: [r / 1e9 for r in values] for kind, values in rates.items()}, rows=rows)
    report.write(args.json)


if __name__ == "__main__":
    raise SystemExit(guarded(main, "speed_vs_official.py"))
