"""gencond bench: IOR/HLR and summary known answers, set parsing, a tiny grid end to end,
resuming from the cell cache (a cut line included), and one-line errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import driver, driver_env
from PIL import Image

from gencond.artifacts import CondensedSet
from gencond.engine import Evaluated
from gencond.errors import GencondError
from gencond.evaluate import bench
from gencond.evaluate.bench import (
    BenchConfig,
    CellCache,
    improvement_metrics,
    parse_set,
    robustness,
    transfer,
)
from gencond.evaluate.protocol import RowResult
from gencond.runtime import native_bf16


def row(name, ipc, mean, arch="convnet3", augment=""):
    return RowResult(name, ipc, arch, [mean - 1, mean + 1], [1.0, 1.0], augment=augment)


def test_ior_and_hlr_are_differences_under_the_same_column():
    results = [row("random", 1, 50.0), row("random", 10, 90.0), row("full", None, 98.0),
               row("DM", 1, 80.0), row("DM", 10, 94.5), row("DM", 1, 60.0, arch="mlp3")]
    metrics = improvement_metrics(results)
    assert metrics[("DM", 1, "convnet3")] == pytest.approx({"ior": 30.0, "hlr": 18.0, "lrs": 29.52503})
    assert metrics[("DM", 10, "convnet3")] == pytest.approx({"ior": 4.5, "hlr": 3.5, "lrs": 27.10740})
    assert metrics[("random", 1, "convnet3")] == pytest.approx({"ior": 0.0, "hlr": 48.0, "lrs": 17.81603})
    assert metrics[("DM", 1, "mlp3")] == {}  # no random or full row under that column
    assert ("full", None, "convnet3") not in metrics


def test_robustness_and_transfer_summaries():
    results = [row("DM", 1, m, augment=a) for a, m in (("dsa", 80.0), ("none", 70.0), ("imagenet", 75.0))]
    results += [row("DM", 1, 40.0, arch="mlp3", augment="dsa"), row("DM", 1, 50.0, arch="alexnet_cifar", augment="dsa")]
    summary = robustness(results)[("DM", 1, "convnet3")]
    assert summary["mean"] == pytest.approx(75.0) and summary["best"] == "dsa"
    assert transfer(results) == {("DM", 1, "dsa"): pytest.approx(45.0)}


def test_set_entries_parse_or_fail_with_one_reason():
    assert parse_set("herding").kind == "selection"
    spec = parse_set("codebook=generator:runs/x/generator")
    assert (spec.name, spec.kind, spec.source) == ("codebook", "generator", "runs/x/generator")
    assert spec.entry == "codebook=generator:runs/x/generator"
    for bad in ("dm:file.pt", "=condensed:x", "DM=pixels:x", "DM=condensed:", ""):
        with pytest.raises(GencondError, match="training set"):
            parse_set(bad)


def test_cell_cache_drops_a_line_cut_by_a_kill(tmp_path):
    path = tmp_path / "cells.jsonl"
    cache = CellCache(path)
    cache.put("a", 50.0, 1.0)
    cache.put("b", 60.0, 2.0)
    with open(path, "a") as f:
        f.write('{"key": "c", "accur')  # killed mid-write
    reopened = CellCache(path)
    assert set(reopened.records) == {"a", "b"} and path.read_text().endswith("\n")
    reopened.put("c", 70.0, 3.0)
    assert set(CellCache(path).records) == {"a", "b", "c"}


@pytest.fixture()
def random_set_file(tmp_path, digits):
    images, labels = digits.train.batch(torch.arange(0, 200, 20))
    path = tmp_path / "ten.safetensors"
    CondensedSet(images, labels, digits.info, method="hand").save(path)
    return path


def tiny_config(tmp_path, random_set_file, **overrides) -> BenchConfig:
    cfg = BenchConfig(sets=["random", f"ten=condensed:{random_set_file}"], inpc=[1], arch=["convnet3", "mlp3"],
                      augment=["none", "dsa"], seeds=1, output_dir=str(tmp_path / "bench"),
                      full_cache=str(tmp_path / "full.jsonl"), device="cpu")
    cfg.train.epochs = 1
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def test_tiny_grid_writes_its_report_and_resumes_without_training(tmp_path, random_set_file, monkeypatch):
    cfg = tiny_config(tmp_path, random_set_file)
    report = bench.run_bench(cfg, log=lambda _: None)
    out = tmp_path / "bench"
    # rows random@1, ten@its own IPC, full; x 2 architectures x 2 augmentations x 1 seed
    assert len(CellCache(out / "cells.jsonl").records) == 8 and len(CellCache(tmp_path / "full.jsonl").records) == 4
    saved = json.loads((out / "results.json").read_text())
    assert saved["benchmark"] == "bench" and len(saved["results"]) == 12
    random_rows = [r for r in saved["results"] if r["training_set"] == "random"]
    assert all(r["ior"] == 0.0 and "hlr" in r for r in random_rows)
    table = (out / "table.md").read_text()
    assert table.startswith("| training set | images/class |") and "IOR (convnet3, none)" in table and "transfer mean" in table
    assert {"accuracy_vs_inpc.png", "per_augmentation.png", "per_architecture.png"} <= {p.name for p in out.iterdir()}
    assert saved["bytes"]["random @ 1"] == 10 * 32 * 32

    def no_training(*args, **kwargs):
        raise AssertionError("a cached cell was trained again")

    monkeypatch.setattr(bench, "evaluate_cell", no_training)
    again = bench.run_bench(cfg, log=lambda _: None)
    assert again["results"] == report["results"]


def test_a_changed_recipe_does_not_reuse_cached_cells(tmp_path, random_set_file, monkeypatch):
    cfg = tiny_config(tmp_path, random_set_file, arch=["convnet3"], augment=["none"], full_data=False,
                      sets=["random"])
    bench.run_bench(cfg, log=lambda _: None)
    calls = []
    monkeypatch.setattr(bench, "evaluate_cell", lambda *a, **k: calls.append(a) or Evaluated(10.0, 0.1))
    cfg.train.lr = 0.02
    bench.run_bench(cfg, log=lambda _: None)
    assert len(calls) == 1


def test_a_file_replaced_at_the_same_path_does_not_reuse_its_cached_cells(tmp_path, random_set_file, digits,
                                                                          monkeypatch):
    cfg = tiny_config(tmp_path, random_set_file, arch=["convnet3"], augment=["none"], full_data=False)
    bench.run_bench(cfg, log=lambda _: None)
    calls = []
    monkeypatch.setattr(bench, "evaluate_cell", lambda *a, **k: calls.append(a[1].name) or Evaluated(10.0, 0.1))
    bench.run_bench(cfg, log=lambda _: None)
    assert calls == []
    images, labels = digits.train.batch(torch.arange(1, 201, 20))  # other images at the same path
    CondensedSet(images, labels, digits.info, method="hand").save(random_set_file)
    bench.run_bench(cfg, log=lambda _: None)
    assert calls == ["ten"]


def test_a_generator_digest_follows_its_weights_and_serving_config_not_its_training_record(tmp_path):
    folder = tmp_path / "gen"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    config = {"_class_name": "G", "guidance_scale": 2.0, "_training": {"wall_seconds": 1.0}}
    (folder / "config.json").write_text(json.dumps(config))
    spec = parse_set(f"g=generator:{folder}")
    first = bench.source_digest(spec)
    (folder / "config.json").write_text(json.dumps({**config, "_training": {"wall_seconds": 2.0}}))
    assert bench.source_digest(spec) == first
    (folder / "config.json").write_text(json.dumps({**config, "guidance_scale": 3.0}))
    assert bench.source_digest(spec) != first
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"other weights")
    assert bench.source_digest(spec) != first
    assert bench.source_digest(parse_set("random")) is None


def test_a_grid_scored_on_the_validation_split_never_reads_the_test_split(tmp_path, random_set_file, monkeypatch):
    import dataclasses

    from gencond.data.base import SubsetImageSet

    cfg = tiny_config(tmp_path, random_set_file, arch=["convnet3"], augment=["none"], full_data=False,
                      sets=["random"], validation_per_class=5, score_on="validation")
    scored, original = [], bench.evaluate_cell
    monkeypatch.setattr(bench, "evaluate_cell", lambda splits, *a, **k: scored.append(splits) or original(splits, *a, **k))
    report = bench.run_bench(cfg, log=lambda _: None)
    assert scored and all(isinstance(s.test, SubsetImageSet) and len(s.test) == 50 for s in scored)
    assert [r["training_set"] for r in report["results"]] == ["random"]
    # its cells are not the cells of the same grid scored on the test split
    key = json.loads(next(iter(CellCache(tmp_path / "bench" / "cells.jsonl").records)))
    carved = cfg.load_splits()
    assert bench.protocol_fingerprint(dataclasses.replace(carved, test=carved.validation), cfg.train) == key["recipe"]
    assert bench.protocol_fingerprint(carved, cfg.train) != key["recipe"]
    cfg.validation_per_class = 0
    with pytest.raises(GencondError, match="score_on must be test, or validation with validation_per_class > 0"):
        cfg.check()


def test_best_over_training_is_an_extra_column_and_retrains_only_cells_without_it(tmp_path, random_set_file,
                                                                                    monkeypatch):
    cfg = tiny_config(tmp_path, random_set_file, arch=["convnet3"], augment=["none"], full_data=False, sets=["random"])
    cfg.train.epochs = 2
    plain = bench.run_bench(cfg, log=lambda _: None)["results"][0]
    assert "best_accuracies" not in plain
    cfg.best_every = 1
    with_best = bench.run_bench(cfg, log=lambda _: None)["results"][0]
    assert with_best["accuracies"] == plain["accuracies"]  # retrained with tests along the way: the same network
    assert with_best["best_accuracies"][0] >= with_best["accuracies"][0]
    assert "best over training, test-chosen (convnet3)" in (tmp_path / "bench" / "table.md").read_text()
    monkeypatch.setattr(bench, "evaluate_cell", lambda *a, **k: pytest.fail("a cell with its best was trained again"))
    assert bench.run_bench(cfg, log=lambda _: None)["results"][0] == with_best


def test_two_worker_processes_train_the_same_cells_as_one(tmp_path, random_set_file, monkeypatch):
    threads = torch.get_num_threads()
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # workers then get 1 thread each, as this process
    torch.set_num_threads(1)  # one thread each way: the same arithmetic, so the same accuracies
    found = {}
    try:
        for workers in (1, 2):
            cfg = tiny_config(tmp_path / str(workers), random_set_file, full_data=False, workers=workers,
                              arch=["mlp3"])
            bench.run_bench(cfg, log=lambda _: None)
            cells = CellCache(tmp_path / str(workers) / "bench" / "cells.jsonl").records
            found[workers] = {k: r["accuracy"] for k, r in cells.items()}
    finally:
        torch.set_num_threads(threads)
    assert len(found[2]) == 4 and found[2] == found[1]


def test_forked_map_yields_every_index_once_and_raises_a_task_error():
    from gencond.runtime import forked_map

    assert sorted(forked_map(lambda i: i * i, 5, 2)) == [(i, i * i) for i in range(5)]
    assert list(forked_map(str, 3, 1)) == [(0, "0"), (1, "1"), (2, "2")]

    def fails(index):
        raise GencondError(f"cell {index} failed")

    with pytest.raises(GencondError, match="failed"):
        list(forked_map(fails, 2, 2))


@pytest.mark.parametrize("argv, message", [
    (["--sets", "dm:file"], "training set"),
    (["--sets", "DM=condensed:/nonexistent.safetensors"], "no condensed set file"),
    (["--sets", "nosuchrule"], "unknown selection method"),
    (["--augment", "mixup"], "unknown augmentation"),
    (["--arch", "nosuchnet"], "nosuchnet"),
    (["--protocol", "sometimes"], "unknown protocol"),
    (["--inpc", "0"], "must be positive"),
    (["--workers", "0"], "workers must be >= 1"),
    (["--inpc", "1000"], "is larger than class"),
])
def test_bad_bench_input_ends_with_one_line(cli_error, tmp_path, argv, message):
    cli_error(["bench", "--output-dir", tmp_path / "b", "--full-cache", tmp_path / "f.jsonl", *argv], message)
    assert not (tmp_path / "b").exists()


def test_a_grid_that_names_nothing_ends_with_one_line(cli_error, tmp_path):
    for empty in ("arch", "augment"):
        path = tmp_path / f"no_{empty}.yaml"
        path.write_text(f"{empty}: []\n")
        cli_error(["bench", "--config", path, "--output-dir", tmp_path / "b"], "names no architecture or no augmentation")
    assert not (tmp_path / "b").exists()


def test_benchmark_config_overrides_apply_or_end_with_one_line(tmp_path):
    from gencond.config import config_with_sets
    from gencond.methods.dim import DiMConfig

    path = tmp_path / "dim.yaml"
    path.write_text("dataset: digits\ngan_epochs: 4\nwidth: 8\npool_training: {batches: 2}\n")
    cfg = config_with_sets(DiMConfig, str(path), ["gan_epochs=5", "match=log_softmax", "pool_training.batch_size=16"])
    assert (cfg.gan_epochs, cfg.match, cfg.width) == (5, "log_softmax", 8)
    assert (cfg.pool_training.batches, cfg.pool_training.batch_size) == (2, 16)  # the file's nested value kept
    for bad, message in ((["gan_epochs"], "KEY=VALUE"), (["gan_epochs=[1"], "KEY=VALUE"), (["gan_epochs="], "KEY=VALUE"),
                         (["no_such_field=1"], "no_such_field"), (["gan_epochs=-1"], "must be non-negative"),
                         (["width.x=1"], "width is not a nested config")):
        with pytest.raises(GencondError) as err:
            config_with_sets(DiMConfig, str(path), bad)
        assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("script, flags, message", [
    ("experiments.dim_vs_cgan.bench_dim", ["--set", "gan_epochs=-1"], "must be non-negative"),
    ("experiments.dim_vs_cgan.bench_dim", ["--variant", "no braces"], "--variant expects NAME="),
    ("experiments.imagenet_cost.cost_model", ["--steps", "0"], "must be positive"),
    ("scripts/make_synthetic_imagenet.py", ["--root", "ROOT", "--classes", "0"], "classes"),
    ("experiments.random_vs_full.bench_foundation", ["--no-such-flag"], "unrecognized arguments"),
    ("experiments.speed_vs_official.speed_vs_official", ["--official-dm", "ROOT"], "no main_DM.py"),
    ("experiments.speed_vs_official.speed_vs_official", ["--official-dim", "ROOT"],
     "no gan_model.py, gen_condense.py, pool_match.py"),
    ("experiments.speed_vs_official.speed_vs_official", [], "--official-dm and/or --official-dim"),
])
def test_entry_points_and_drivers_end_bad_arguments_with_one_line_and_status_2(tmp_path, script, flags, message,
                                                                               monkeypatch, capsys):
    import runpy
    import sys

    flags = [str(tmp_path / "root") if flag == "ROOT" else flag for flag in flags]
    monkeypatch.setattr(sys, "argv", [script, *flags])
    with pytest.raises(SystemExit) as exit_:
        if script.endswith(".py"):
            runpy.run_path(str(Path(__file__).resolve().parents[1] / script), run_name="__main__")
        else:
            runpy.run_module(script, run_name="__main__")
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and err.count("\n") == 1, err


@pytest.mark.parametrize("flags, message", [
    (["codebook", "--variant", "x={epochs: -1}"], "--variant x"),
    (["dm", "--variant", "x={iterations: 0}"], "--variant x"),
    (["dm", "--variant", "x={ipc: 3}"], "come from --inpc and --work-dir"),
    (["codebook", "--variant", "x={seed: 1}"], "--variant x: seed and validation_per_class choose"),
    (["codebook"], "give at least one --variant"),
    (["dm", "--variant", "x={}", "--set", "iterations"], "--set expects KEY=VALUE"),
])
def test_sweep_ends_bad_arguments_with_one_line_and_status_2(tmp_path, flags, message, cli_error):
    cli_error(["sweep", *flags, "--work-dir", tmp_path / "runs"], message)


def test_sweep_condenses_pixel_variants_per_inpc_and_scores_them_on_the_validation_split(tmp_path, capsys):
    from gencond.cli import main

    out, work = tmp_path / "out.json", tmp_path / "runs"

    def run(*extra, status=0):
        code = main([
            "sweep", "dm", "--variant", "fp32={mixed_precision: 'no'}",
            "--variant", "two iterations={iterations: 2, mixed_precision: 'no'}", "--work-dir", str(work),
            "--inpc", "1", "2", "--seeds", "1", "--eval-epochs", "1", "--validation-per-class", "5", "--no-real",
            "--json", str(out), "--set", "iterations=1", "--set", "batch_real=4", *extra])
        assert code == status
        return json.loads(out.read_text())

    report = run()
    assert "test split is not read" in capsys.readouterr().out
    assert report["benchmark"] == "dm_sweep" and report["validation_images"] == 50
    assert [(r["training_set"], r["ipc"]) for r in report["results"]] == [
        ("fp32", 1), ("fp32", 2), ("two iterations", 1), ("two iterations", 2)]
    assert set(report["train_seconds"]["fp32"]) == {"1", "2"}
    sets = {ipc: CondensedSet.load(work / "two_iterations" / f"ipc{ipc}.safetensors") for ipc in (1, 2)}
    assert {ipc: len(s) for ipc, s in sets.items()} == {1: 10, 2: 20}
    assert sets[2].config["iterations"] == 2 and sets[2].config["validation_per_class"] == 5
    assert sets[2].config["real_forward"] == "fp32"
    assert CondensedSet.load(work / "fp32" / "ipc1.safetensors").config["iterations"] == 1
    assert report["configs"]["two iterations"]["2"]["ipc"] == 2 and report["configs"]["fp32"]["1"]["iterations"] == 1

    # --reuse scores the condensed sets again without condensing them
    written = (work / "fp32" / "ipc1.safetensors").stat().st_mtime_ns
    again = run("--reuse")
    assert (work / "fp32" / "ipc1.safetensors").stat().st_mtime_ns == written
    assert again["train_seconds"] == report["train_seconds"]  # each set's own condense_seconds
    assert [r["accuracies"] for r in again["results"]] == [r["accuracies"] for r in report["results"]]
    # a set condensed from another config is not scored as this one
    capsys.readouterr()
    run("--reuse", "--set", "batch_real=5", status=2)
    err = capsys.readouterr().err
    assert "fp32/ipc1.safetensors was made with another batch_real" in err and err.count("\n") == 1, err


# Stands in for the official main_DM.py: one get_network call and one optimiser step per
# iteration, Iteration + 1 iterations, as the official loop runs with --num_eval 0.
FAKE_MAIN_DM = """
import sys
import torch

def get_network():
    return torch.nn.Linear(4, 2)

def main():
    iterations = int(sys.argv[sys.argv.index("--Iteration") + 1])
    images = torch.zeros(3, 4, requires_grad=True)
    optimizer = torch.optim.SGD([images], lr=0.1)
    for _ in range(iterations + 1):
        loss = get_network()(images).square().sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
"""


# Stand in for the official DiM code: a generator and critic, the two scripts' load_data,
# diffaug and train(); phase 2's train() also iterates its loader inside the body, as the
# official pool network's training does, and checks that it gets the real loader's items.
FAKE_DIM_MODELS = """
import torch

class Generator(torch.nn.Linear):
    def __init__(self, args):
        super().__init__(args.dim_noise, 4)

class Discriminator(torch.nn.Linear):
    def __init__(self, args):
        super().__init__(4, 1)
"""
FAKE_DIM_SCRIPT = """
import torch

DEVICE = "cpu"

def load_data(args):  # batch i holds label i
    return [(torch.zeros(args.batch_size, 4), torch.full((args.batch_size,), i)) for i in range(50)], None

def define_model(args, num_classes, e_model=None):
    assert e_model == args.match_model  # the script asks for the pool network the run names
    return torch.nn.Linear(4, num_classes)

def diffaug(args):
    return None, None

def train(args, epoch, generator, discriminator, optim_g, optim_d, trainloader, criterion, aug, aug_rand):
    if INNER:
        define_model(args, args.num_classes)
    for images, labels in trainloader:
        if INNER:  # the pool network's batches: the whole official loader, not the handed-over ones
            assert [int(inner_labels[0]) for _, inner_labels in trainloader] == list(range(50))
        loss = discriminator(generator(torch.zeros(args.batch_size, args.dim_noise))).sum()
        loss.backward()
"""


def test_speed_vs_official_times_both_codes_alternately_and_counts_their_flops(tmp_path):
    import subprocess

    (tmp_path / "main_DM.py").write_text(FAKE_MAIN_DM)
    (tmp_path / "gan_model.py").write_text(FAKE_DIM_MODELS)
    (tmp_path / "gen_condense.py").write_text(FAKE_DIM_SCRIPT.replace("INNER", "False"))
    (tmp_path / "pool_match.py").write_text(FAKE_DIM_SCRIPT.replace("INNER", "True"))
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "speed.json"
    result = subprocess.run([*driver("experiments.speed_vs_official.speed_vs_official"), "--official-dm", str(tmp_path),
                             "--official-dim", str(tmp_path), "--dm-config", str(root / "configs" / "dm" / "digits.yaml"),
                             "--dim-config", str(root / "configs" / "dim" / "digits.yaml"), "--ipc", "1",
                             "--iterations", "2", "--repeats", "2", "--threads", "1", "--dm-set", "batch_real=8",
                             "--dim-set", "width=8", "--dim-set", "batch_size=8", "--dim-set", "match_batch=10",
                             "--dim-set", "pool_training.batches=1", "--dim-set", "mixed_precision=no",
                             "--json", str(out)],
                            capture_output=True, text=True, check=False, cwd=root, env=driver_env())
    assert result.returncode == 0, result.stderr[-2000:]
    order = [line.split(", ")[-1].split(":")[0] for line in result.stdout.splitlines() if line.startswith("repeat")]
    # DM, then DiM's two phases from one process per side; the second repeat starts with gencond
    assert order == ["official", "gencond"] + ["official"] * 2 + ["gencond"] * 2 + ["gencond", "official"] + \
        ["gencond"] * 2 + ["official"] * 2
    rows = {row["case"]: row for row in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["DM, IPC 1", "DiM phase 1", "DiM phase 2"]
    # the fake DM's warm-up iteration: a 3x4 by 4x2 product forward, and its input and weight gradients
    assert rows["DM, IPC 1"]["official"]["gflop_per_step"] * 1e9 == 3 * (2 * 3 * 4 * 2)
    # the fake DiM's warm-up step: the 64x100 by 100x4 and 64x4 by 4x1 products forward, the
    # critic's input and weight gradients, the generator's weight gradient
    dim_flops = 2 * 64 * 100 * 4 * 2 + 2 * 64 * 4 * 3
    assert rows["DiM phase 1"]["official"]["gflop_per_step"] * 1e9 == rows["DiM phase 2"]["official"]["gflop_per_step"] * 1e9 == dim_flops
    for row in rows.values():
        assert row["gencond"]["gflop_per_step"] > 0
        for side in ("official", "gencond"):
            assert [len(run["seconds"]) for run in row[side]["runs"]] == [2, 2]
        assert row["ratio"] == row["gencond"]["seconds_per_step"] / row["official"]["seconds_per_step"]
    assert rows["DiM phase 2"]["gencond"]["gflop_per_step"] > rows["DiM phase 1"]["gencond"]["gflop_per_step"]
    # gencond's side runs at its config's precision: DM digits auto (bf16 only where native), DiM forced fp32
    native = native_bf16(torch.device("cpu"))
    assert rows["DM, IPC 1"]["gencond_precision"] == ("bf16" if native else "fp32")
    assert rows["DiM phase 1"]["gencond_precision"] == rows["DiM phase 2"]["gencond_precision"] == "fp32"


def test_set_options_parse_into_the_spec_and_back_into_its_entry():
    spec = parse_set("cb=generator:runs/g?candidates=10&rule=kcenter&labels=soft")
    assert (spec.candidates, spec.rule, spec.labels, spec.truncation) == (10, "kcenter", "soft", 0.0)
    assert spec.entry == "cb=generator:runs/g?candidates=10&rule=kcenter&labels=soft"
    assert parse_set("cb=generator:runs/g?truncation=0.5").entry == "cb=generator:runs/g?truncation=0.5"
    assert parse_set("random?labels=soft").source == "random"
    for bad, message in (("random?candidates=2", "not an option of a selection set"),
                         ("DM=condensed:x?truncation=1", "not an option of a condensed set"),
                         ("cb=generator:g?candidates=0", "candidates must be >= 1"),
                         ("cb=generator:g?candidates=3&rule=best", "rule one of herding, kcenter"),
                         ("cb=generator:g?truncation=nan", "truncation >= 0"),
                         ("cb=generator:g?candidates=two", "candidates must be a int"),
                         ("cb=generator:g?labels=relabel", "labels must be hard or soft"),
                         ("cb=generator:g?seed", "'seed' is not an option")):
        with pytest.raises(GencondError, match=message):
            parse_set(bad)


def test_serving_options_are_sets_of_the_grid_with_their_own_rows_columns_and_cached_cells(tmp_path, random_set_file):
    """Candidate selection, truncation and soft labels as set options of one tiny grid: each
    its own row (or, for soft labels, column), the selection network and the teacher trained
    once and recorded (the teacher also labels a condensed file that stores no soft labels),
    and a second run trains nothing."""
    shipped = Path(__file__).resolve().parents[1] / "checkpoints" / "dim_digits"
    cfg = BenchConfig(sets=["random", "random?labels=soft", f"DiM=generator:{shipped}",
                            f"DiM=generator:{shipped}?candidates=3&rule=confidence",
                            f"DiM=generator:{shipped}?truncation=0.5", f"DiM=generator:{shipped}?labels=soft",
                            f"ten=condensed:{random_set_file}?labels=soft"],
                      inpc=[1], seeds=1, full_data=False, output_dir=str(tmp_path / "bench"), device="cpu",
                      selector_epochs=0, teacher_epochs=0)
    cfg.train.epochs = 1
    lines = []
    report = bench.run_bench(cfg, log=lines.append)
    rows = {(r["training_set"], r["labels"]) for r in report["results"]}
    assert rows == {("random", "hard"), ("random", "soft"), ("DiM (fixed)", "hard"), ("DiM (fixed)", "soft"),
                    ("DiM (fixed, confidence of 3x)", "hard"), ("DiM (fixed, truncation 0.5)", "hard"), ("ten", "soft")}
    assert set(report["reference_networks"]) == {"selector", "teacher"}
    cells = [json.loads(line) for line in (tmp_path / "bench" / "cells.jsonl").read_text().splitlines()]
    assert [json.loads(c["key"])["teacher"] for c in cells if json.loads(c["key"])["set"].startswith("ten=")] == \
        [{"network": "convnet3", "epochs": 0, "seed": 0}]
    assert "convnet3, soft labels" in (tmp_path / "bench" / "table.md").read_text()
    soft = next(r for r in report["results"] if r["training_set"] == "DiM (fixed)" and r["labels"] == "soft")
    assert soft["ior"] == pytest.approx(soft["mean"] - next(
        r["mean"] for r in report["results"] if r["training_set"] == "random" and r["labels"] == "soft"))
    again = bench.run_bench(cfg, log=lines.append)
    assert "7 cells: 7 cached, 0 to train" in lines and again["results"] == report["results"]
    # one sample grid per generator as served: truncation draws another grid, candidates and labels do not
    grids = sorted(p.name for p in (tmp_path / "bench").glob("samples_*.png"))
    assert grids == ["samples_DiM.png", "samples_DiM_truncation=0.5.png"]
    plain, truncated = (np.asarray(Image.open(tmp_path / "bench" / g)) for g in grids)
    assert plain.shape == truncated.shape and not np.array_equal(plain, truncated)


def test_two_sets_that_give_the_same_row_are_refused(tmp_path, cli_error):
    shipped = Path(__file__).resolve().parents[1] / "checkpoints" / "dim_digits"
    cli_error(["bench", "--sets", f"DiM=generator:{shipped}", f"DiM=generator:{shipped}", "--inpc", "1",
               "--no-full-data", "--output-dir", tmp_path / "b"], "two training sets give the row 'DiM (fixed)'")
