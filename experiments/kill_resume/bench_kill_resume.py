"""Kill -9 and resume: every generator method, killed at random moments of a training run
(some of them while the training state is being written), resumed with ``--resume`` until
it finishes, must end with exactly the generator of an uninterrupted run.

Each trial starts ``gencond train METHOD`` in a fresh folder, sends SIGKILL at a moment
drawn uniformly over 90 % of the reference run's duration (every third trial: the moment the
state's temporary folder appears, i.e. during Accelerate's write: the first write in the
first such trial, a later one, with a saved state beside it, in the others), then runs
``--resume`` (or starts again when no state was saved yet) until the run completes,
and compares every tensor of the final ``model.safetensors`` with the reference run's.
Seconds lost per kill = killed run + resumed run - the reference run. With
``--save-every-steps N`` the runs also save their state every N steps, so most kills are
resumed within an epoch.

    python -m experiments.kill_resume.bench_kill_resume --trials 10 --json experiments/kill_resume/bench_kill_resume.json
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from gencond.cli import guarded
from gencond.config import OneLineParser
from gencond.evaluate.protocol import format_rows
from gencond.evaluate.report import BenchmarkReport

# A few steps per epoch and a few epochs on digits: long enough to kill inside, short enough for 10 trials.
TINY = {
    "dim": ["--config", "configs/dim/digits.yaml", "--width", "8", "--gan-epochs", "3", "--match-epochs", "2",
            "--steps-per-epoch", "3", "--sample-every", "0", "--seed", "3"],
    "codebook": ["--config", "configs/codebook/digits.yaml", "--epochs", "5", "--steps-per-epoch", "2",
                 "--width", "16", "--feature-net-epochs", "1", "--sample-every", "0", "--seed", "3"],
}


def command(method: str, out: Path, resume: bool, every: int) -> list[str]:
    """The tiny run; ``every`` > 0 also saves the state every ``every`` steps within an epoch."""
    return [sys.executable, "-m", "gencond", "train", method, *TINY[method], "--output-dir", str(out),
            *(["--save-every-steps", str(every)] if every else []), *(["--resume"] if resume else [])]


def run(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def killed_run(cmd: list[str], out: Path, after: float | str, timeout: float) -> tuple[float, str]:
    """Start ``cmd`` and SIGKILL it after ``after`` seconds, or when ``out/state.tmp``
    appears (``after`` "first write"; "later write": once ``out/state`` exists too);
    returns the seconds it ran and where it was killed."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tmp, state = out / "state.tmp", out / "state"
    while proc.poll() is None:
        elapsed = time.perf_counter() - start
        if isinstance(after, str):
            due = tmp.exists() and (after == "first write" or state.exists())
        else:
            due = elapsed >= after
        if due or elapsed > timeout:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return elapsed, f"during the {after}" if isinstance(after, str) else f"at {after:.1f} s"
        time.sleep(0.005 if isinstance(after, str) else 0.05)
    return time.perf_counter() - start, "finished before the kill"


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a / "generator" / "model.safetensors")), load_file(str(b / "generator" / "model.safetensors"))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def resumed_within_an_epoch(out: Path) -> bool:
    log = out / "log.jsonl"
    return log.is_file() and '"resumed_at_step"' in log.read_text()


def trials(method: str, count: int, work: Path, rng: random.Random, every: int) -> dict:
    reference = work / method / "reference"
    reference_seconds = run(command(method, reference, False, every))
    rows = []
    for t in range(count):
        out = work / method / f"trial_{t}"
        after = ("first write" if t == 2 else "later write") if t % 3 == 2 else rng.uniform(0.0, 0.9 * reference_seconds)
        ran, where = killed_run(command(method, out, False, every), out, after, 3 * reference_seconds)
        state_left = sorted(p.name for p in out.glob("state*")) if out.exists() else []
        resumed = run(command(method, out, any(name in state_left for name in ("state", "state.old")), every))
        rows.append({"trial": t, "killed": where, "state_folders_after_kill": state_left,
                     "resumed_within_an_epoch": resumed_within_an_epoch(out),
                     "identical": same_weights(reference, out), "seconds_lost": round(ran + resumed - reference_seconds, 1)})
        print(f"{method} trial {t}: killed {where}, left {state_left or 'nothing'}, "
              f"identical {rows[-1]['identical']}, {rows[-1]['seconds_lost']} s lost", flush=True)
    return {"reference_seconds": round(reference_seconds, 1), "trials": rows}


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(TINY), choices=list(TINY))
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-every-steps", type=int, default=0, help="also save the state every N steps")
    parser.add_argument("--work-dir", default="runs/kill_resume")
    parser.add_argument("--json", default="experiments/kill_resume/bench_kill_resume.json")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    report = BenchmarkReport("kill_resume", vars(args), torch.device("cpu"))
    rng = random.Random(args.seed)
    results = {m: trials(m, args.trials, Path(args.work_dir), rng, args.save_every_steps) for m in args.methods}
    rows = []
    for method, r in results.items():
        lost = [t["seconds_lost"] for t in r["trials"]]
        rows.append([method, str(len(lost)), str(sum(t["identical"] for t in r["trials"])),
                     str(sum(t["killed"].startswith("during") for t in r["trials"])),
                     str(sum(t["resumed_within_an_epoch"] for t in r["trials"])),
                     f"{r['reference_seconds']:.1f}", f"{sum(lost) / len(lost):.1f} (max {max(lost):.1f})"])
    print(format_rows(["method", "trials", "identical to the uninterrupted run", "killed during the state write",
                       "resumed within an epoch", "uninterrupted s", "seconds lost per kill"], rows))
    report.add(results=results)
    report.write(args.json)


if __name__ == "__main__":
    raise SystemExit(guarded(main, "bench_kill_resume.py"))
