"""Generator training under faults: a NaN loss stops with one line naming the step and
the last good state, or rolls back to it with lower learning rates; a second run pointed
at an output folder in use refuses with one line."""

from __future__ import annotations

import errno
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gencond.artifacts import output_lock
from gencond.cli import main
from gencond.errors import GencondError
from gencond.methods.dim import DiMConfig, DiMTrainer, train_dim
from gencond.training.networks import RealBatchConfig

TINY = DiMConfig(dataset="digits", width=8, batch_size=16, gan_epochs=2, match_epochs=1, steps_per_epoch=2,
                 pool=["convnet3"], pool_training=RealBatchConfig(batches=1, batch_size=16), match_batch=20,
                 sample_every=0, seed=3)
pytestmark = pytest.mark.slow


def poison_step(monkeypatch, steps: set[int]) -> None:
    """Fill one generator weight with NaN before the given training steps (counted from 0
    over the whole run, 2 steps per epoch), as a diverging update would."""
    original, calls = DiMTrainer.train_step, []

    def train_step(self, ctx, item):
        if len(calls) in steps:
            with torch.no_grad():
                next(self.raw_gen.parameters()).fill_(float("nan"))
        calls.append(1)
        return original(self, ctx, item)

    monkeypatch.setattr(DiMTrainer, "train_step", train_step)


def test_a_nan_loss_stops_with_one_line_naming_the_step_and_the_last_good_state(monkeypatch, tmp_path):
    poison_step(monkeypatch, {3})  # epoch 2, step 2
    with pytest.raises(GencondError) as error:
        train_dim(replace(TINY, output_dir=str(tmp_path)))
    message = str(error.value)
    assert "non-finite loss at epoch 2, step 2" in message and "\n" not in message
    assert f"the last good state is {tmp_path / 'state'} (epoch 1)" in message
    assert (tmp_path / "state").is_dir() and not (tmp_path / "generator").exists()


def test_rollback_reloads_the_last_good_state_and_lowers_the_learning_rates(monkeypatch, tmp_path):
    poison_step(monkeypatch, {3})
    folder = train_dim(replace(TINY, output_dir=str(tmp_path), on_nonfinite="rollback"))
    assert all(torch.isfinite(w).all() for w in load_file(str(folder / "model.safetensors")).values())
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["rollbacks"] == 1 and summary["lr_scale"] == 0.5
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r.get("epoch", "rollback") for r in records] == [1, "rollback", 2, 3]
    assert records[1]["to_epoch"] == 1 and "epoch 2, step 2" in records[1]["error"]


def test_rollback_before_any_saved_state_stops(monkeypatch, tmp_path):
    poison_step(monkeypatch, {0})
    with pytest.raises(GencondError, match="no state was saved yet"):
        train_dim(replace(TINY, output_dir=str(tmp_path), on_nonfinite="rollback"))


def test_a_second_run_on_an_output_folder_in_use_refuses_with_one_line(capsys, tmp_path):
    with output_lock(tmp_path):
        code = main(["train", "dim", "--config", "configs/dim/digits.yaml", "--output-dir", str(tmp_path)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "is in use by another run (pid" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]  # nothing written
    with output_lock(tmp_path):  # released: free again
        pass


def test_bad_fault_settings_are_one_line_errors(capsys, tmp_path):
    for argv, message in ((["--on-nonfinite", "ignore"], "on_nonfinite must be stop or rollback"),
                          (["--rollback-lr-factor", "1.5"], "rollback_lr_factor must be in (0, 1)")):
        code = main(["train", "dim", "--output-dir", str(tmp_path), *argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and message in err[0], err


def test_a_full_disk_during_the_state_write_keeps_the_previous_state(monkeypatch, tmp_path):
    from accelerate import Accelerator

    original, calls = Accelerator.save_state, []

    def save_state(self, output_dir=None, **kwargs):
        calls.append(output_dir)
        if len(calls) == 2:  # epoch 2's write: the disk is full half-way through
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "partial.bin").write_bytes(b"\0" * 10)
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, output_dir, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", save_state)
    with pytest.raises(GencondError) as error:
        train_dim(replace(TINY, output_dir=str(tmp_path)))
    assert "No space left on device" in str(error.value) and "the previous state" in str(error.value)
    assert not (tmp_path / "state.tmp").exists()
    monkeypatch.setattr(Accelerator, "save_state", original)
    resumed = train_dim(replace(TINY, output_dir=str(tmp_path)), resume=True)  # from epoch 1's intact state
    assert (resumed / "model.safetensors").is_file()


def test_an_os_error_in_a_command_is_one_line(monkeypatch, capsys, tmp_path):
    import gencond.cli.sample_cmd as sample_cmd

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "png"))

    monkeypatch.setattr(sample_cmd, "sample_set", full_disk)
    code = main(["sample", "--inpc", "1", "--out", str(tmp_path / "png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err == [f"gencond sample: error: No space left on device: {tmp_path / 'png'}"], err
