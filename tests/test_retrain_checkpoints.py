"""The shipped checkpoints are what their shipped configs make: retraining
``configs/<method>/digits.yaml`` from a fresh clone gives the same training record and, on
the machine type that trained them (x86-64 CPU, torch's CPU kernels), the same weights bit
for bit. Minutes of training each, so outside the default run: ``pytest -m retrain``."""

from dataclasses import asdict
from pathlib import Path

import pytest
from safetensors.torch import load_file

from gencond.cli import main
from gencond.methods import get_method
from gencond.models.generators import read_generator_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.retrain
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("method", ["dim", "codebook", "diffusion"])
def test_the_shipped_config_retrains_the_shipped_checkpoint_bitwise(method, tmp_path, monkeypatch):
    shipped = ROOT / "checkpoints" / f"{method}_digits"
    record = read_generator_config(shipped)["_training"]
    monkeypatch.chdir(ROOT)
    assert main(["train", method, "--config", f"configs/{method}/digits.yaml", "--output-dir", str(tmp_path),
                 "--mixed-precision", record["mixed_precision"]]) == 0
    retrained = read_generator_config(tmp_path / "generator")["_training"]
    assert {k: retrained[k] for k in record if k != "output_dir"} == {k: v for k, v in record.items() if k != "output_dir"}
    defaults = asdict(get_method(method).config())
    added = {k: v for k, v in retrained.items() if k not in record}  # fields that came after the checkpoint
    assert added == {k: defaults[k] for k in added}
    ours, theirs = load_file(tmp_path / "generator" / "model.safetensors"), load_file(shipped / "model.safetensors")
    assert ours.keys() == theirs.keys()
    differing = [name for name in ours if not ours[name].equal(theirs[name])]
    assert not differing, f"{len(differing)} of {len(ours)} tensors differ, e.g. {differing[:3]}"
