"""DM iterations side by side with the official code on this machine: seconds per iteration
of each, their ratio, the FLOPs each iteration runs (counted, so the two are seen to do the
same work) and the floor those FLOPs put on it at this CPU's faster rate: a large matrix
product's or ConvNet-3's middle convolution's, measured before and after.

The official code (github.com/VICO-UoE/DatasetCondensation, ``main_DM.py``, with the local
CPU patch that stays outside this project; see README) is imported from ``--official-dm``
and its ``main()`` runs unchanged; two probes stamp the clock: an iteration starts when it
calls ``get_network`` (once per iteration with ``--num_eval 0``) and ends when the image
optimiser's ``step`` returns. gencond's side runs ``dm_iteration``, the function ``gencond
condense dm`` loops over, from the same config. Iteration 0 of each is the warm-up, where
FLOPs are counted; the others are timed. Every measurement is a process of its own (same
threads, fresh allocator), and the two codes alternate (official first in even repeats,
gencond first in odd ones), so drift on the machine falls on both.

    python scripts/speed_vs_official.py --official-dm ../official/DatasetCondensation \\
        --ipc 1 10 --iterations 10 --repeats 3 --json results/speed_dm_official.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from gencond.cli import guarded
from gencond.config import OneLineParser
from gencond.errors import GencondError
from gencond.evaluate.cost import FlopCounter, cpu_rates
from gencond.evaluate.protocol import format_rows
from gencond.evaluate.report import BenchmarkReport, add_set_argument, config_with_sets
from gencond.methods.dm import DMConfig, dm_iteration
from gencond.methods.pixel import ImageTrainer
from gencond.runtime import keep_freed_memory

RESULT_PREFIX = "SPEED_RESULT "
SIDES = ("official", "gencond")


def official_iterations(official_dir: str, ipc: int, iterations: int, data_root: str) -> tuple[list[float], int]:
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
    return [end - start for start, end in zip(starts[1:], ends[1:])], counter.flops


def gencond_iterations(config: str, ipc: int, iterations: int, data_root: str, sets: list[str]) -> tuple[list[float], int]:
    """Seconds of iterations 1..N of gencond's DM from ``config`` and the FLOPs of iteration 0."""
    cfg = config_with_sets(DMConfig, config, [f"ipc={ipc}", f"data_root={data_root}", *sets])
    cfg.check()
    keep_freed_memory()  # as `gencond condense dm` does
    trainer = ImageTrainer(cfg, cfg.load_splits().train, torch.device("cpu"))
    with FlopCounter() as counter:
        dm_iteration(trainer)
    seconds = []
    for _ in range(iterations):
        start = time.perf_counter()
        dm_iteration(trainer)
        seconds.append(time.perf_counter() - start)
    return seconds, counter.flops


def measure(args, side: str, ipc: int) -> dict:
    """One side's measurement in a fresh process at ``args.threads`` threads."""
    cmd = [sys.executable, __file__, "--child", side, "--ipc", str(ipc), "--iterations", str(args.iterations),
           "--threads", str(args.threads), "--official-dm", args.official_dm, "--config", args.config,
           "--data-root", args.data_root, *[flag for item in args.set for flag in ("--set", item)]]
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise GencondError(f"the {side} DM measurement at IPC {ipc} failed: {last}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def child(args) -> None:
    torch.set_num_threads(args.threads)
    (ipc,) = args.ipc
    if args.child == "official":
        seconds, flops = official_iterations(args.official_dm, ipc, args.iterations, args.data_root)
    else:
        seconds, flops = gencond_iterations(args.config, ipc, args.iterations, args.data_root, args.set)
    print(RESULT_PREFIX + json.dumps({"seconds": seconds, "flops": flops}), flush=True)


def summary(runs: list[dict], rate: float) -> dict:
    """Median seconds per iteration of each run, their mean and spread, FLOPs and floor."""
    medians = [statistics.median(run["seconds"]) for run in runs]
    flops = runs[0]["flops"]
    return {"seconds_per_iteration": statistics.mean(medians),
            "std": statistics.stdev(medians) if len(medians) > 1 else 0.0,
            "run_medians": medians, "gflop_per_iteration": flops / 1e9, "floor_seconds": flops / rate,
            "runs": runs}


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-dm", required=True, help="a checkout of VICO-UoE/DatasetCondensation (CPU-patched)")
    parser.add_argument("--config", default="configs/dm/mnist_subset.yaml", help="gencond's DM config")
    parser.add_argument("--data-root", default="../shared/data", help="holds MNIST/raw, read by both codes")
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--iterations", type=int, default=10, help="timed iterations per run, after one warm-up")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each code per IPC, alternating")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    add_set_argument(parser, "override a field of gencond's config (a YAML value)")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--json", default="results/speed_dm_official.json")
    args = parser.parse_args()
    if args.child:
        return child(args)
    if min(args.ipc + [args.iterations, args.repeats, args.threads]) < 1:
        raise GencondError("--ipc, --iterations, --repeats and --threads must be positive")
    if not Path(args.official_dm, "main_DM.py").is_file():
        raise GencondError(f"{args.official_dm}: no main_DM.py (a DatasetCondensation checkout)")
    config_with_sets(DMConfig, args.config, args.set)  # a bad config ends here, not in a child

    torch.set_num_threads(args.threads)
    report = BenchmarkReport("DM iterations beside the official code", vars(args), torch.device("cpu"))
    rates = {kind: [rate] for kind, rate in cpu_rates().items()}  # measured before and after the runs
    runs = {(side, ipc): [] for side in SIDES for ipc in args.ipc}
    for repeat in range(args.repeats):
        for ipc in args.ipc:
            for side in SIDES if repeat % 2 == 0 else SIDES[::-1]:
                result = measure(args, side, ipc)
                runs[side, ipc].append(result)
                print(f"repeat {repeat}, IPC {ipc}, {side}: {statistics.median(result['seconds']):.3f} s per iteration",
                      flush=True)
    for kind, rate in cpu_rates().items():
        rates[kind].append(rate)
    gflops = {kind: statistics.mean(values) / 1e9 for kind, values in rates.items()}
    rate = max(gflops.values()) * 1e9

    rows, table = [], []
    for ipc in args.ipc:
        theirs, ours = summary(runs["official", ipc], rate), summary(runs["gencond", ipc], rate)
        ratio = ours["seconds_per_iteration"] / theirs["seconds_per_iteration"]
        rows.append({"ipc": ipc, "official": theirs, "gencond": ours, "ratio": ratio})
        table.append([str(ipc), f"{theirs['seconds_per_iteration']:.3f} ± {theirs['std']:.3f}",
                      f"{ours['seconds_per_iteration']:.3f} ± {ours['std']:.3f}", f"{ratio:.2f}x",
                      f"{theirs['gflop_per_iteration']:.0f} / {ours['gflop_per_iteration']:.0f}",
                      f"{ours['floor_seconds']:.3f}",
                      f"{theirs['seconds_per_iteration'] / theirs['floor_seconds']:.1f}x / "
                      f"{ours['seconds_per_iteration'] / ours['floor_seconds']:.1f}x"])
    print(f"\nMNIST, batch_real 256, {args.iterations} timed iterations per run, {args.repeats} runs per code "
          f"(mean ± std of run medians), {args.threads} thread(s); fp32 GFLOP/s: matrix product {gflops['matmul']:.0f}, "
          f"ConvNet-3 convolution {gflops['conv']:.0f} (the floor uses the faster)\n")
    print(format_rows(["IPC", "official s/iter", "gencond s/iter", "gencond / official", "GFLOP/iter (official / gencond)",
                       "floor s", "over floor (official / gencond)"], table))
    report.add(gflops={kind: [r / 1e9 for r in values] for kind, values in rates.items()}, rows=rows)
    report.write(args.json)


if __name__ == "__main__":
    raise SystemExit(guarded(main, "speed_vs_official.py"))
