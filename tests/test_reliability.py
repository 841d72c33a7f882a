"""Generator training under faults: a NaN loss stops with one line naming the step and
the last good state, or rolls back to it with lower learning rates; a second run pointed
at an output folder in use refuses with one line; a run stopped within an epoch resumes
from the state saved every N steps and ends bitwise identical to a straight run."""

from __future__ import annotations

import errno
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gencond.cli import main
from gencond.engine.networks import RealBatchConfig
from gencond.errors import GencondError
from gencond.files import output_lock
from gencond.methods.codebook import CodebookConfig, CodebookTrainer, train_codebook
from gencond.methods.diffusion import DiffusionConfig, DiffusionTrainer, train_diffusion
from gencond.methods.dim import DiMConfig, DiMTrainer, train_dim

TINY = DiMConfig(dataset="digits", width=8, batch_size=16, gan_epochs=2, match_epochs=1, steps_per_epoch=2,
                 pool=["convnet3"], pool_training=RealBatchConfig(batches=1, batch_size=16), match_batch=20,
                 sample_every=0, seed=3)
TINY_CODEBOOK = CodebookConfig(dataset="digits", epochs=2, steps_per_epoch=3, codebook_size=3, code_dim=8,
                               embed_dim=8, width=8, feature_net_epochs=0, class_feature_images=16,
                               association_size=4, generator_steps_per_phi_update=1,
                               phi_training=RealBatchConfig(batches=1, batch_size=16), phi_reinit_every=2,
                               sample_every=0, seed=1)
TINY_DIFFUSION = DiffusionConfig(dataset="digits", epochs=2, steps_per_epoch=3, batch_size=16, block_channels=[8, 16],
                                 layers_per_block=1, attention_levels=[], sampling_steps=2, condense=True,
                                 sample_every=0, ema_decay=0.9, seed=2)
pytestmark = pytest.mark.slow


def before_step(monkeypatch, trainer_class, action) -> None:
    """Call ``action(trainer, step)`` before every training step (``step`` counted from 0
    over the whole run)."""
    original, calls = trainer_class.train_step, []

    def train_step(self, ctx, item):
        action(self, len(calls))
        calls.append(1)
        return original(self, ctx, item)

    monkeypatch.setattr(trainer_class, "train_step", train_step)


def poison_step(monkeypatch, steps: set[int]) -> None:
    """Fill one generator weight with NaN before the given training steps (2 steps per
    epoch), as a diverging update would."""
    def poison(trainer, step):
        if step in steps:
            with torch.no_grad():
                next(trainer.raw_gen.parameters()).fill_(float("nan"))

    before_step(monkeypatch, DiMTrainer, poison)


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


def test_a_second_run_on_an_output_folder_in_use_refuses_with_one_line(cli_error, tmp_path):
    with output_lock(tmp_path):
        cli_error(["train", "dim", "--config", "configs/dim/digits.yaml", "--output-dir", tmp_path],
                  "is in use by another run (pid")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]  # nothing written
    with output_lock(tmp_path):  # released: free again
        pass


def test_bad_fault_settings_are_one_line_errors(cli_error, tmp_path):
    for argv, message in ((["--on-nonfinite", "ignore"], "on_nonfinite must be stop or rollback"),
                          (["--rollback-lr-factor", "1.5"], "rollback_lr_factor must be in (0, 1)")):
        cli_error(["train", "dim", "--output-dir", tmp_path, *argv], message)


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

    monkeypatch.setattr(sample_cmd, "write_stream", full_disk)
    code = main(["sample", "--inpc", "1", "--out", str(tmp_path / "png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err == [f"gencond sample: error: No space left on device: {tmp_path / 'png'}"], err


class Stopped(Exception):
    """Stands for a kill between two steps."""


def stop_before_step(monkeypatch, trainer_class, stop: int) -> None:
    """The run stops just before its ``stop``-th training step (counted from 0 over the run)."""
    def maybe_stop(trainer, step):
        if step == stop:
            raise Stopped

    before_step(monkeypatch, trainer_class, maybe_stop)


@pytest.mark.parametrize("method", ["dim", "codebook", "diffusion"])
def test_a_run_stopped_within_an_epoch_resumes_from_the_step_state_bitwise(monkeypatch, tmp_path, method):
    """DiM: stopped in the matching epoch (its pool network and stream mid-epoch);
    codebook: in its second epoch (phi updated every step); diffusion: in its second epoch
    (the minimax memories and the EMA filled mid-epoch). The straight run saves no
    step states, so saving them must not change the run either; it keeps every epoch's
    generator (``keep_every``), the last of which is the exported one."""
    train, trainer_class, cfg, stop = {"dim": (train_dim, DiMTrainer, replace(TINY, steps_per_epoch=3), 8),
                                       "codebook": (train_codebook, CodebookTrainer, TINY_CODEBOOK, 5),
                                       "diffusion": (train_diffusion, DiffusionTrainer, TINY_DIFFUSION, 5)}[method]
    straight = load_file(str(train(replace(cfg, output_dir=str(tmp_path / "straight"), keep_every=1))
                             / "model.safetensors"))
    kept = sorted((tmp_path / "straight" / "epochs").iterdir())
    assert [p.name for p in kept] == [f"epoch_{e:04d}" for e in range(1, cfg.epochs + 1)]
    last = load_file(str(kept[-1] / "model.safetensors"))
    assert all(torch.equal(last[key], straight[key]) for key in straight)
    # DiM and the diffusion model read their real batches through 2 loader workers here: the
    # same batches in the same order as the straight run's, from the step where it stopped
    workers = {} if method == "codebook" else {"loader_workers": 2}
    stepped = replace(cfg, output_dir=str(tmp_path / "stopped"), save_every_steps=1, **workers)
    with monkeypatch.context() as patch:
        stop_before_step(patch, trainer_class, stop)  # step 3 of the last epoch: 2 of its 3 steps saved
        with pytest.raises(Stopped):
            train(stepped)
    resumed = load_file(str(train(stepped, resume=True) / "model.safetensors"))
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    log = [json.loads(line) for line in (tmp_path / "stopped" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, cfg.epochs + 1)) and log[-1]["resumed_at_step"] == 2
    straight_log = [json.loads(line) for line in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    not_losses = {"epoch", "steps", "rank", "phase", "pool_network", "phi_draws", "seconds", "seconds_per_step",
                  "seconds_after_first_step", "minimax", "data_wait_s", "data_wait_s_per_step"}
    # (phi_draws describes the epoch where it (re)started)
    losses = [k for k in straight_log[-1] if k not in not_losses]
    assert len(losses) >= 3
    assert {k: log[-1].get(k) for k in losses} == {k: straight_log[-1][k] for k in losses}


def test_save_every_steps_must_not_be_negative(capsys, tmp_path):
    code = main(["train", "dim", "--output-dir", str(tmp_path), "--save-every-steps", "-1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "save_every_steps and keep_every must be >= 0" in err[0], err
