"""channels_last against the default memory format on this CPU: seconds per training step of the
digits configs of DiM (both phases) and the diffusion model, each setting run `--repeats` times,
interleaved (the first step of each phase, a warm-up, is not timed).

    python -m experiments.gpu_settings.bench_channels_last --json experiments/gpu_settings/bench_channels_last.json
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile

from gencond.cli import guarded
from gencond.config import OneLineParser, config_with_sets
from gencond.engine import resolve_device
from gencond.evaluate.report import BenchmarkReport
from gencond.methods.diffusion import DiffusionConfig, DiffusionTrainer
from gencond.methods.dim import DiMConfig, DiMTrainer
from gencond.training.profiling import measure_steps, step_config

METHODS = {"dim": (DiMConfig, DiMTrainer), "diffusion": (DiffusionConfig, DiffusionTrainer)}


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per phase")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default="experiments/gpu_settings/bench_channels_last.json")
    args = parser.parse_args()
    report = BenchmarkReport("channels_last on the CPU", vars(args), resolve_device("cpu"))
    seconds: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as work:
        for repeat in range(args.repeats):
            for method, (cls, trainer) in METHODS.items():
                for channels_last in (False, True):
                    cfg = config_with_sets(cls, f"configs/{method}/digits.yaml", [f"channels_last={channels_last}"])
                    cfg = step_config(dataclasses.replace(cfg, sample_every=0), args.steps,
                                      f"{work}/{method}_{channels_last}_{repeat}")
                    phases, _, _ = measure_steps(trainer, cfg, count=False)
                    for number, phase in phases.items():
                        key = f"{method} phase {number}, channels_last {channels_last}"
                        seconds.setdefault(key, []).append(statistics.mean(phase["seconds"]))
    rows = {key: {"runs": [round(s, 4) for s in found], "median_s_per_step": round(statistics.median(found), 4)}
            for key, found in seconds.items()}
    for key, row in rows.items():
        print(f"{key}: {row['median_s_per_step']} s/step (runs {row['runs']})")
    report.add(seconds_per_step=rows)
    report.write(args.json)


if __name__ == "__main__":
    raise SystemExit(guarded(main, "bench_channels_last.py"))
