"""Bad input across every command and the Python API: each case ends with one line (the
CLI: on stderr, exit status 2; the API: a GencondError) and writes nothing. The matrix
lists every case; a property-based part (hypothesis) draws more over the CLI arguments."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from gencond.artifacts import CondensedSet
from gencond.cli import main
from gencond.data import DatasetInfo, list_datasets
from gencond.errors import GencondError
from gencond.models import GENCOND_NETWORKS, load_generator
from gencond.serve import GeneratorDataset

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints" / "dim_digits"
CODEBOOK = ROOT / "checkpoints" / "codebook_digits"
DIGITS = load_generator(SHIPPED).info  # the embedded default's dataset, as the shipped generator records it


def digits_set() -> CondensedSet:
    return CondensedSet(torch.zeros(10, 1, 32, 32), torch.arange(10), DIGITS, method="hand-made")


class Disguised:
    """What a malicious pickle would carry; loading it must never run."""

    def __reduce__(self):
        return (os.system, ("echo pickled code ran",))


def make_inputs(root: Path) -> None:
    """The broken files and folders the cases point at."""
    root.mkdir()
    digits_set().save(root / "good.safetensors")
    data = (root / "good.safetensors").read_bytes()
    (root / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (root / "garbage.safetensors").write_bytes(b"\x00\x01not a safetensors file")
    with open(root / "disguised.pt", "wb") as f:
        pickle.dump({"images": Disguised()}, f)
    torch.save({"weights": torch.zeros(3)}, root / "other.pt")
    np.savez(root / "missing_keys.npz", images=np.zeros((10, 1, 32, 32), np.float32))
    np.savez(root / "wrong_dtype.npz", images=np.zeros((10, 1, 32, 32), np.float32),
             labels=np.array(["a"] * 10), metadata=np.array("{}"))
    with safe_open(str(root / "good.safetensors"), "pt") as f:  # saving validates labels: write the file by hand
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    save_file({**tensors, "labels": tensors["labels"] + 5}, str(root / "labels_out_of_range.safetensors"), metadata)
    save_file({**tensors, "labels": tensors["labels"] + 0.5}, str(root / "float_labels.safetensors"), metadata)
    CondensedSet(torch.zeros(10, 1, 28, 28), torch.arange(10), DatasetInfo("mnist", 1, 28, DIGITS.class_names, (0.1307,), (0.3081,)),
                 method="hand-made").save(root / "mnist_shaped.safetensors")
    with zipfile.ZipFile(root / "not_npz.npz", "w") as z:
        z.writestr("readme.txt", "hello")
    (root / "unknown_key.yaml").write_text("epochs: 2\nlearning_rate_typo: 0.1\n")
    (root / "not_a_mapping.yaml").write_text("- just\n- a list\n")
    (root / "bad_syntax.yaml").write_text("epochs: [2\n")
    for name in ("truncated_weights", "pickle_weights", "bad_json", "wrong_format", "unknown_arch", "wrong_shapes",
                 "no_weights"):
        shutil.copytree(SHIPPED, root / name)
    weights = (SHIPPED / "model.safetensors").read_bytes()
    (root / "truncated_weights" / "model.safetensors").write_bytes(weights[:1000])
    buffer = io.BytesIO()
    pickle.dump({"w": Disguised()}, buffer)
    (root / "pickle_weights" / "model.safetensors").write_bytes(buffer.getvalue())
    (root / "bad_json" / "config.json").write_text("{not json")
    config = json.loads((SHIPPED / "config.json").read_text())
    (root / "wrong_format" / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "_class_name"}))
    (root / "unknown_arch" / "config.json").write_text(json.dumps({**config, "_class_name": "StyleGAN9"}))
    save_file({"a": torch.zeros(2)}, str(root / "wrong_shapes" / "model.safetensors"))
    (root / "no_weights" / "model.safetensors").unlink()
    (root / "empty_folder").mkdir()


# (case name, argv with IN = the inputs folder and OUT = a path that must not appear, expected fragment)
CLI_CASES = [
    ("list: unknown kind", ["list", "things"], "invalid choice"),
    ("no command", [], "required: COMMAND"),
    ("unknown command", ["distill"], "invalid choice"),
    ("sample: INPC 0", ["sample", "--inpc", "0", "--out", "OUT"], "must be positive, got 0"),
    ("sample: negative INPC", ["sample", "--inpc", "-3", "--out", "OUT"], "must be positive, got -3"),
    ("sample: INPC not a number", ["sample", "--inpc", "ten", "--out", "OUT"], "invalid int value"),
    ("sample: INPC missing", ["sample", "--out", "OUT"], "required: --inpc"),
    ("sample: class out of range", ["sample", "--inpc", "2", "--classes", "10", "--out", "OUT"], "out of range"),
    ("sample: batch size 0", ["sample", "--inpc", "2", "--batch-size", "0", "--out", "OUT"], "batch size must be positive"),
    ("sample: M = 0", ["sample", "--inpc", "2", "--candidates", "0", "--out", "OUT"], "must be >= 1, got 0"),
    ("sample: unknown rule", ["sample", "--inpc", "2", "--candidates", "3", "--rule", "median", "--out", "OUT"],
     "unknown candidate rule 'median'"),
    ("sample: unknown format", ["sample", "--inpc", "2", "--format", "gif", "--out", "OUT"], "invalid choice"),
    ("sample: no such checkpoint", ["sample", "--inpc", "2", "--checkpoint", "IN/nothing", "--out", "OUT"],
     "no generator folder"),
    ("sample: checkpoint is a set file", ["sample", "--inpc", "2", "--checkpoint", "IN/good.safetensors",
                                          "--out", "OUT"], "generator folder"),
    ("sample: empty folder", ["sample", "--inpc", "2", "--checkpoint", "IN/empty_folder", "--out", "OUT"],
     "not a gencond generator folder"),
    ("sample: truncated weights", ["sample", "--inpc", "2", "--checkpoint", "IN/truncated_weights", "--out", "OUT"],
     "cannot read"),
    ("sample: pickle as weights", ["sample", "--inpc", "2", "--checkpoint", "IN/pickle_weights", "--out", "OUT"],
     "pickles are never loaded"),
    ("sample: config not JSON", ["sample", "--inpc", "2", "--checkpoint", "IN/bad_json", "--out", "OUT"],
     "cannot parse"),
    ("sample: config of another format", ["sample", "--inpc", "2", "--checkpoint", "IN/wrong_format", "--out", "OUT"],
     "not a gencond generator config"),
    ("sample: unknown architecture", ["sample", "--inpc", "2", "--checkpoint", "IN/unknown_arch", "--out", "OUT"],
     "class 'StyleGAN9'"),
    ("sample: weights of another shape", ["sample", "--inpc", "2", "--checkpoint", "IN/wrong_shapes", "--out", "OUT"],
     "does not fit its config"),
    ("sample: weights missing", ["sample", "--inpc", "2", "--checkpoint", "IN/no_weights", "--out", "OUT"],
     "no weights file"),
    ("eval: no such set", ["eval", "--condensed", "IN/nothing.safetensors", "--json", "OUT"], "no condensed set file"),
    ("eval: truncated safetensors", ["eval", "--condensed", "IN/truncated.safetensors", "--json", "OUT"], "cannot read"),
    ("eval: garbage safetensors", ["eval", "--condensed", "IN/garbage.safetensors", "--json", "OUT"], "cannot read"),
    ("eval: pickle disguised as .pt", ["eval", "--condensed", "IN/disguised.pt", "--json", "OUT"],
     "plain-tensor .pt file"),
    ("eval: a .pt of something else", ["eval", "--condensed", "IN/other.pt", "--json", "OUT"],
     "not a gencond condensed set"),
    ("eval: npz without labels", ["eval", "--condensed", "IN/missing_keys.npz", "--json", "OUT"], "condensed set"),
    ("eval: npz with string labels", ["eval", "--condensed", "IN/wrong_dtype.npz", "--json", "OUT"], "arrays of numbers expected, got labels"),
    ("eval: zip that is no npz", ["eval", "--condensed", "IN/not_npz.npz", "--json", "OUT"], "condensed set"),
    ("eval: float labels", ["eval", "--condensed", "IN/float_labels.safetensors", "--json", "OUT"],
     "labels must be integers, got torch.float32"),
    ("eval: labels out of range", ["eval", "--condensed", "IN/labels_out_of_range.safetensors", "--json", "OUT"],
     "labels must lie in [0, 9]"),
    ("eval: set of another dataset", ["eval", "--condensed", "IN/mnist_shaped.safetensors", "--json", "OUT"], "mnist"),
    ("eval: IPC 0", ["eval", "--ipc", "0", "--json", "OUT"], "must be positive"),
    ("eval: 0 seeds", ["eval", "--seeds", "0", "--json", "OUT"], "number of seeds must be positive"),
    ("eval: unknown architecture", ["eval", "--arch", "convnet9", "--json", "OUT"], "unknown architecture 'convnet9'"),
    ("eval: unknown dataset", ["eval", "--dataset", "mnits", "--json", "OUT"], "unknown dataset 'mnits'"),
    ("eval: epochs not a number", ["eval", "--epochs", "many", "--json", "OUT"], "expected int, got 'many'"),
    ("eval: no config file", ["eval", "--config", "IN/nothing.yaml", "--json", "OUT"], "no config file"),
    ("eval: config with an unknown key", ["eval", "--config", "IN/unknown_key.yaml", "--json", "OUT"],
     "learning_rate_typo"),
    ("eval: config not a mapping", ["eval", "--config", "IN/not_a_mapping.yaml", "--json", "OUT"], "not_a_mapping.yaml"),
    ("eval: config not YAML", ["eval", "--config", "IN/bad_syntax.yaml", "--json", "OUT"], "bad_syntax.yaml"),
    ("eval: checkpoint of the wrong kind", ["eval", "--checkpoint", "IN/good.safetensors", "--inpc", "1",
                                            "--json", "OUT"], "generator folder"),
    ("train: unknown method", ["train", "gan"], "invalid choice"),
    ("train: width 0", ["train", "dim", "--width", "0", "--output-dir", "OUT"], "width must be positive"),
    ("train: unknown flag", ["train", "dim", "--widht", "8", "--output-dir", "OUT"], "unrecognized arguments"),
    ("train: config of another method", ["train", "codebook", "--config", "configs/dim/digits.yaml",
                                         "--output-dir", "OUT"], "gan_epochs"),
    ("train: resume without state", ["train", "dim", "--resume", "--output-dir", "OUT"], "no saved training state"),
    ("train: unknown NaN policy", ["train", "dim", "--on-nonfinite", "ignore", "--output-dir", "OUT"],
     "on_nonfinite must be stop or rollback"),
    ("train: codebook of size 0", ["train", "codebook", "--codebook-size", "0", "--output-dir", "OUT"],
     "codebook_size"),
    ("train: init generator that does not exist", ["train", "codebook", "--init-generator", "IN/nothing",
                                                   "--output-dir", "OUT"], "nothing"),
    ("condense: unknown method", ["condense", "distill", "--out", "OUT"], "unknown"),
    ("condense: IPC 0", ["condense", "dm", "--ipc", "0", "--out", "OUT"], "images per class must be positive"),
    ("condense: unknown dataset", ["condense", "random", "--dataset", "mnits", "--out", "OUT"], "unknown dataset"),
    ("bench: unknown augmentation", ["bench", "--augment", "mixup", "--output-dir", "OUT"], "mixup"),
    ("bench: unknown architecture", ["bench", "--arch", "convnet9", "--output-dir", "OUT"], "convnet9"),
    ("bench: unknown set", ["bench", "--sets", "pixels", "--output-dir", "OUT"], "pixels"),
]


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad") / "in"
    make_inputs(root)
    return root


def run_cli(argv: list[str], inputs: Path, work: Path, capsys) -> tuple[int, list[str]]:
    argv = [a.replace("IN/", f"{inputs}/").replace("OUT", str(work / "out")).replace("configs/", f"{ROOT}/configs/")
            for a in argv]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines()


@pytest.mark.parametrize(("case", "argv", "fragment"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(case, argv, fragment, inputs, tmp_path, capsys,
                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    before = snapshot(inputs)
    code, err = run_cli(argv, inputs, work, capsys)
    assert code == 2, (case, err)
    assert len(err) == 1 and "Traceback" not in err[0], (case, err)
    assert fragment in err[0], (case, err[0])
    assert snapshot(work) == set() and snapshot(inputs) == before, case
    assert {p.name for p in tmp_path.iterdir()} == {"work"}, case


API_CASES = [
    ("load_generator: no folder", lambda: load_generator("/nonexistent/generator"), "no generator folder"),
    ("load_generator: a set file", lambda: load_generator(ROOT / "README.md"), "generator folder"),
    ("CondensedSet.load: no file", lambda: CondensedSet.load("/nonexistent.safetensors"), "no condensed set file"),
    ("CondensedSet.load: not UTF-8 path", lambda: CondensedSet.load(os.fsdecode(b"/tmp/\xff\xfe.safetensors")),
     "no condensed set file"),
    ("GeneratorDataset: INPC 0", lambda: GeneratorDataset(load_generator(SHIPPED), 0), "must be positive"),
    ("GeneratorDataset: batch 0", lambda: GeneratorDataset(load_generator(SHIPPED), 2, batch_size=0),
     "batch size must be positive"),
    ("GeneratorDataset: class out of range", lambda: GeneratorDataset(load_generator(SHIPPED), 2, classes=[12]),
     "out of range"),
    ("GeneratorDataset: fresh with candidates", lambda: GeneratorDataset(load_generator(SHIPPED), 2, fresh=True,
                                                                         candidates=2, rule="herding", selector=object()),
     "candidate selection serves fixed sets"),
    ("GeneratorDataset: M without selector", lambda: GeneratorDataset(load_generator(SHIPPED), 2, candidates=2),
     "needs a selection network"),
    ("CondensedSet: soft labels absent", lambda: digits_set().targets(soft=True), "soft labels asked of"),
]


@pytest.mark.parametrize(("case", "call", "fragment"), API_CASES, ids=[c[0] for c in API_CASES])
def test_api_bad_input_is_one_line(case, call, fragment):
    with pytest.raises(GencondError) as error:
        call()
    assert fragment in str(error.value) and "\n" not in str(error.value), (case, str(error.value))


def test_the_matrix_has_at_least_40_cases():
    assert len(CLI_CASES) + len(API_CASES) >= 40
    commands = {argv[0] for _, argv, _ in CLI_CASES if argv}
    assert commands >= {"condense", "eval", "train", "sample", "list", "bench"}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(inpc=st.integers(max_value=0), batch=st.integers(min_value=-5, max_value=600))
def test_sample_with_any_non_positive_inpc_is_one_line(inpc, batch, tmp_path, capsys):
    code, err = run_cli(["sample", "--inpc", str(inpc), "--batch-size", str(batch), "--out", "OUT"],
                        tmp_path, tmp_path, capsys)
    assert code == 2 and len(err) == 1 and ("must be positive" in err[0]), err
    assert not (tmp_path / "out").exists()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF, exclude_characters="-"),
                    min_size=1, max_size=12))
def test_any_unknown_dataset_or_architecture_name_is_one_line(name, capsys):
    import timm

    # (Hypothesis also tries the project's own string constants, such as a timm model's name)
    for flag, known in (("--dataset", list_datasets()), ("--arch", GENCOND_NETWORKS)):
        if name in known or (flag == "--arch" and timm.is_model(name)):
            continue
        code, err = run_cli(["eval", flag, name, "--seeds", "1", "--epochs", "1", "--json", "/nonexistent/x.json"],
                            Path("/nonexistent"), Path("/nonexistent"), capsys)
        assert code == 2 and len(err) == 1 and "Traceback" not in err[0], (flag, name, err)
