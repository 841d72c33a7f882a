"""Two-process data-parallel training (torchrun, gloo, CPU): every rank's weights stay
bitwise identical over 200 steps, and a rank that dies or hangs ends the run within a
bounded time, with a message, instead of leaving the others waiting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="torchrun test")]

# Trains tiny DiM through the CLI; rank 1 dies (exit) or hangs (sleeps) before the
# training step given in GENCOND_FAULT_STEP.
DRIVER = """
import os, sys, time
from gencond.cli import main
from gencond.methods.dim import DiMTrainer

fault, step = os.environ.get("GENCOND_FAULT", ""), int(os.environ.get("GENCOND_FAULT_STEP", "-1"))
original, calls = DiMTrainer.train_step, []

def train_step(self, ctx, item):
    if self.rank == 1 and len(calls) == step:
        if fault == "die":
            os._exit(17)
        time.sleep(3600)
    calls.append(1)
    return original(self, ctx, item)

DiMTrainer.train_step = train_step
sys.exit(main(["train", "dim", *sys.argv[1:]]))
"""

TINY = ["--dataset", "digits", "--width", "8", "--batch-size", "16", "--pool", "convnet3",
        "--pool-training.batches", "1", "--pool-training.batch-size", "16", "--match-batch", "20",
        "--sample-every", "0"]


def torchrun(tmp_path: Path, port: int, args: list[str], env: dict, timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           str(driver), *TINY, "--output-dir", str(tmp_path / "run"), *args]
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", **env},
                            timeout=timeout)
    return result, time.perf_counter() - start


def test_two_ranks_stay_bitwise_identical_over_200_steps(tmp_path):
    result, _ = torchrun(tmp_path, 29531, ["--gan-epochs", "4", "--match-epochs", "1", "--steps-per-epoch", "40"],
                         {}, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert sum(r["steps"] for r in log) == 200 and summary["processes"] == 2
    prints = summary["weights_fingerprint_per_rank"]
    assert set(prints) == {"gen", "disc"}
    for name, (first, second) in prints.items():
        assert first == second, name


@pytest.mark.parametrize("fault", ["die", "hang"])
def test_a_rank_that_dies_or_hangs_ends_the_run_within_bounded_time(tmp_path, fault):
    """die: the launcher sees the exit and stops the other rank. hang: the other rank's
    next collective times out (collective_timeout_s), it ends with one line, and the
    launcher stops the hung one."""
    result, seconds = torchrun(tmp_path, 29532 if fault == "die" else 29533,
                               ["--gan-epochs", "2", "--match-epochs", "0", "--steps-per-epoch", "4",
                                "--collective-timeout-s", "15"],
                               {"GENCOND_FAULT": fault, "GENCOND_FAULT_STEP": "5"}, timeout=240)
    assert result.returncode != 0
    assert seconds < 120, seconds
    if fault == "die":
        assert "exitcode  : 17" in result.stderr or "exitcode: 17" in result.stderr, result.stderr[-2000:]
    else:
        assert "a collective with the other processes failed" in result.stderr, result.stderr[-2000:]
    assert (tmp_path / "run" / "state").is_dir()  # epoch 1's state, intact for --resume


def test_two_ranks_resumed_mid_epoch_end_with_the_weights_of_an_uninterrupted_run(tmp_path):
    """Each rank's epoch context (its random stream, its pool network) is saved by rank: a
    2-process run killed in the matching epoch after a state saved within it, then resumed,
    ends bitwise where the uninterrupted run ends."""
    from safetensors.torch import load_file

    args = ["--gan-epochs", "1", "--match-epochs", "1", "--steps-per-epoch", "4", "--save-every-steps", "2"]
    for name in ("whole", "cut"):
        (tmp_path / name).mkdir()
    whole, _ = torchrun(tmp_path / "whole", 29534, args, {}, timeout=300)
    assert whole.returncode == 0, whole.stderr[-2000:]
    cut, _ = torchrun(tmp_path / "cut", 29535, args, {"GENCOND_FAULT": "die", "GENCOND_FAULT_STEP": "7"}, timeout=300)
    assert cut.returncode != 0
    resumed, _ = torchrun(tmp_path / "cut", 29536, [*args, "--resume"], {}, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "epoch 1, step 2" in resumed.stdout + resumed.stderr
    expected, got = (load_file(str(tmp_path / name / "run" / "generator" / "model.safetensors")) for name in ("whole", "cut"))
    assert all(torch.equal(expected[key], got[key]) for key in expected)
