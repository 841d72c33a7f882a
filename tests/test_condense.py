"""``gencond condense``: every selection and pixel method writes the common file that
``gencond eval`` reads; bad input ends with one line."""

import pytest

from gencond.artifacts import CondensedSet
from gencond.cli import main

TINY = {
    "random": [],
    "herding": ["--embed-epochs", "0"],
    "kcenter": ["--embed-epochs", "0"],
    "kmeans": ["--embed-epochs", "0", "--kmeans-iterations", "5"],
    "dm": ["--iterations", "2", "--batch-real", "8"],
    "dc": ["--iterations", "1", "--batch-real", "8"],
    "dsa": ["--iterations", "1", "--batch-real", "8", "--dsa-strategy", "crop_scale"],
    "idc": ["--iterations", "1", "--inner-loop", "1", "--net-training.batches", "1", "--batch-real", "8"],
}


@pytest.mark.parametrize("method", sorted(TINY))
def test_every_method_writes_a_condensed_set_that_eval_reads(capsys, tmp_path, method):
    path = tmp_path / f"{method}.safetensors"
    assert main(["condense", method, "--ipc", "2", "--output", str(path), *TINY[method]]) == 0
    condensed = CondensedSet.load(path)
    assert condensed.method == method and condensed.images_per_class().tolist() == [2] * 10
    assert condensed.factor == (2 if method == "idc" else 1)
    assert condensed.config["ipc"] == 2 and condensed.config["condense_seconds"] >= 0
    assert main(["eval", "--condensed", str(path), "--epochs", "1", "--seeds", "1"]) == 0
    out = capsys.readouterr().out
    assert f"{method} ({path.name}) | 2" in out


def test_a_config_file_and_flags_combine(tmp_path):
    path = tmp_path / "dm.safetensors"
    assert main(["condense", "dm", "--config", "configs/dm/digits.yaml", "--iterations", "1", "--ipc", "1",
                 "--output", str(path)]) == 0
    condensed = CondensedSet.load(path)
    assert condensed.config["iterations"] == 1 and condensed.config["batch_real"] == 128 and len(condensed) == 10


@pytest.mark.parametrize(
    "argv, message",
    [
        (["condense", "dmm"], "unknown method 'dmm'"),
        (["condense", "dim"], "dim trains a generator: use gencond train dim"),
        (["condense", "herding", "--ipc", "1000"], "IPC 1000 is larger than class"),
        (["condense", "random", "--ipc", "0"], "images per class must be positive"),
        (["condense", "dm", "--init", "pixels"], "unknown init 'pixels'"),
        (["condense", "dsa", "--net", "convnet9"], "unknown architecture 'convnet9'"),
        (["condense", "idc", "--distance", "cos"], "unknown distance 'cos'"),
        (["condense", "dm", "--config", "no/such.yaml"], "no config file at no/such.yaml"),
    ],
)
def test_bad_input_ends_with_one_clear_line(cli_error, argv, message):
    cli_error(argv, message)
