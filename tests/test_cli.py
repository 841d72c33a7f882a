import json
import subprocess
import sys

import pytest
import torch

from gencond.artifacts import CondensedSet
from gencond.cli import main
from gencond.data import DatasetInfo

QUICK = ["--epochs", "2", "--seeds", "1", "--arch", "convnet3"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_console_script_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "gencond", "--help"], capture_output=True, text=True, check=True).stdout
    assert "eval" in out and "list" in out


def test_eval_random_selection_prints_a_table_and_writes_json(capsys, tmp_path):
    path = tmp_path / "r.json"
    code, out, _ = run_cli(capsys, "eval", "--ipc", "1", "2", *QUICK, "--json", str(path))
    assert code == 0
    assert "training set | images/class | convnet3" in out and "random       | 2 " in out
    report = json.loads(path.read_text())
    assert [r["ipc"] for r in report["results"]] == [1, 2]
    assert report["dataset"]["name"] == "digits" and report["config"]["train"]["epochs"] == 2


def test_eval_reads_a_condensed_set(capsys, tmp_path, digits):
    x, y = digits.train.batch(torch.arange(40))
    path = CondensedSet(x, y, digits.info, method="handmade").save(tmp_path / "set.pt")
    code, out, _ = run_cli(capsys, "eval", "--condensed", str(path), *QUICK, "--json", str(tmp_path / "r.json"))
    assert code == 0 and "handmade (set.pt)" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--dataset", "mnits"], "unknown dataset 'mnits'"),
        (["--arch", "convnet9"], "unknown architecture 'convnet9'"),
        (["--ipc", "0"], "images per class must be positive"),
        (["--ipc", "-3"], "images per class must be positive"),
        (["--ipc", "1000"], "IPC 1000 is larger than class"),
        (["--select", "herdin"], "unknown selection method 'herdin'"),
        (["--seeds", "0"], "seeds must be positive"),
        (["--epochs", "ten"], "expected int"),
        (["--dataset", "mnist", "--data-root", "/nonexistent"], "mnist: no readable data under /nonexistent"),
        (["--condensed", "/nonexistent/set.safetensors"], "no condensed set file at /nonexistent/set.safetensors"),
    ],
)
def test_bad_input_ends_with_one_clear_line(cli_error, argv, message):
    cli_error(["eval", *argv], message)


def test_truncated_and_wrong_shape_condensed_files(cli_error, tmp_path, digits):
    x, y = digits.train.batch(torch.arange(20))
    path = CondensedSet(x, y, digits.info).save(tmp_path / "set.safetensors")
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    cli_error(["eval", "--condensed", path], "truncated or not a condensed set")

    rgb = DatasetInfo("rgb", 3, 32, digits.info.class_names, (0.5,) * 3, (0.2,) * 3)
    wrong = CondensedSet(x.repeat(1, 3, 1, 1), y, rgb).save(tmp_path / "rgb.safetensors")
    cli_error(["eval", "--condensed", wrong], "3x32x32 images of 10 classes, but digits has 1x32x32")


def test_list_names_datasets_networks_methods(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0 and "digits" in out and "convnet3" in out and "random (selection)" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--config", "/nonexistent.yaml"], "no config file at /nonexistent.yaml"),
        (["--width", "0"], "width must be positive"),
        (["--match", "pixels"], "unknown matching loss 'pixels'"),
        (["--pool", "convnet9"], "unknown architecture 'convnet9'"),
        (["--dataset", "mnits"], "unknown dataset 'mnits'"),
        (["--conditioning", "film"], "unknown conditioning 'film'"),
    ],
)
def test_train_bad_input_ends_with_one_clear_line(cli_error, tmp_path, argv, message):
    cli_error(["train", "dim", "--output-dir", tmp_path, *argv], message)
