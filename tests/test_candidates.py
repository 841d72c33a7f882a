"""Candidate selection at serving time: the rules on a hand-made embedding, the kept set
drawn from the candidates of its class, serving through sample_set, GeneratorDataset and
the CLI, and the one-line errors."""

from pathlib import Path

import pytest
import torch
from conftest import driver, driver_env
from torch import nn

from gencond.artifacts import CondensedSet
from gencond.cli import main
from gencond.engine.candidates import select_candidates
from gencond.errors import GencondError
from gencond.models import create_network, load_generator
from gencond.serve import CANDIDATE_RULES, GeneratorDataset, Selector, sample_set

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "dim_digits"


class PixelEmbedding(nn.Module):
    """A stand-in selection network: an image's two pixels are its embedding, and its
    head scores class 1 by the first pixel (class 0 by minus it)."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))

    def forward_features(self, x):
        return x.flatten(1)

    def forward_head(self, x, pre_logits=False):
        return x if pre_logits else self.head(x)


# class 0: x = 0, 4, 2.1, 10 (mean 4.025); class 1: x = 0, 1, 2, 9 (mean 3); y = 0
POINTS = torch.tensor([[0.0, 0], [4, 0], [2.1, 0], [10, 0], [0, 0], [1, 0], [2, 0], [9, 0]]).view(8, 1, 1, 2)
LABELS = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])


def kept(rule: str, n: int) -> list[int]:
    return select_candidates(POINTS, LABELS, n, rule, Selector(PixelEmbedding()), seed=0).tolist()


def test_each_rule_keeps_the_expected_candidates_of_a_hand_made_embedding():
    assert set(CANDIDATE_RULES) >= {"herding", "kcenter", "kmeans", "confidence"}
    assert kept("herding", 1) == [1, 6]  # the candidate nearest each class mean
    assert kept("confidence", 2) == [0, 2, 7, 6]  # class 0: smallest x first; class 1: largest x first
    chosen = kept("kmeans", 2)  # one prototype per cluster: {0, 2.1, 4} | {10} and {0, 1, 2} | {9}
    assert set(chosen[:2]) == {2, 3} and set(chosen[2:]) == {5, 7}
    centres = kept("kcenter", 2)
    for first, second, members in ((centres[0], centres[1], range(4)), (centres[2], centres[3], range(4, 8))):
        distance = {i: abs(float(POINTS[i, 0, 0, 0] - POINTS[first, 0, 0, 0])) for i in members}
        assert second == max(distance, key=distance.get)  # the farthest from the random first centre


@pytest.fixture(scope="module")
def generator():
    return load_generator(SHIPPED)


@pytest.fixture(scope="module")
def selector():
    torch.manual_seed(0)
    return Selector(create_network("convnet3", 10, 1, 32).eval(), {"network": "convnet3", "trained_on": "nothing"})


def test_sample_set_keeps_inpc_of_its_m_times_inpc_draws_per_class(generator, selector):
    pool = sample_set(generator, 6, seed=4)  # the candidates of M = 3, INPC = 2: slots 0..5 of each class
    chosen = sample_set(generator, 2, seed=4, candidates=3, rule="confidence", selector=selector)
    assert chosen.labels.tolist() == pool.labels.view(10, 6)[:, :2].flatten().tolist()
    for image, label in zip(chosen.images, chosen.labels):
        same_class = pool.images[pool.labels == label]
        assert any(torch.allclose(image, candidate, atol=1e-5) for candidate in same_class)  # generated in another batch
    assert chosen.config["candidates"] == {"per_kept_image": 3, "rule": "confidence",
                                           "selector": {"network": "convnet3", "trained_on": "nothing"}}
    dataset = GeneratorDataset(generator, inpc=2, seed=4, batch_size=500, candidates=3, rule="confidence",
                               selector=selector)
    torch.testing.assert_close(torch.stack([dataset[i][0] for i in range(len(dataset))]), chosen.images)


@pytest.mark.parametrize("kwargs, message", [
    ({"candidates": 0}, "must be >= 1"),
    ({"candidates": 2, "rule": "nearest"}, "unknown candidate rule 'nearest'"),
    ({"candidates": 2}, "needs a selection network"),
])
def test_bad_candidate_requests_are_refused_before_generating(generator, kwargs, message):
    with pytest.raises(GencondError, match=message):
        sample_set(generator, 2, **kwargs)
    with pytest.raises(GencondError, match=message):
        GeneratorDataset(generator, inpc=2, **kwargs)


def test_fresh_datasets_refuse_candidate_selection(generator, selector):
    with pytest.raises(GencondError, match="fixed sets"):
        GeneratorDataset(generator, inpc=2, fresh=True, candidates=2, selector=selector)


def test_cli_samples_with_a_real_data_selector_and_refuses_bad_requests(tmp_path, capsys):
    out = tmp_path / "kept.safetensors"
    assert main(["sample", "--inpc", "2", "--candidates", "3", "--rule", "kmeans", "--selector-epochs", "0",
                 "--checkpoint", str(SHIPPED), "--format", "safetensors", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "selection network: convnet3 trained 0 epoch(s) on 1347 real images of digits" in printed
    assert "kept by kmeans from 3x as many" in printed
    selection = CondensedSet.load(out).config["candidates"]
    assert selection["rule"] == "kmeans" and selection["selector"]["trained_on"] == "digits training split"
    for flags, message in ((["--candidates", "0"], "must be >= 1"), (["--candidates", "2", "--rule", "x"], "unknown"),
                           (["--candidates", "2", "--selector-epochs", "-1"], "--selector-epochs")):
        assert main(["sample", "--inpc", "2", "--checkpoint", str(SHIPPED), "--out", str(tmp_path / "bad"), *flags]) == 2
        error = capsys.readouterr().err.strip()
        assert message in error and "\n" not in error
        assert not (tmp_path / "bad").exists()


def serving_bench(tmp_path, *extra) -> dict:
    """experiments/serving/bench_serving.py on digits at a tiny size (one seed, one epoch, untrained selector and teacher); its JSON."""
    import json
    import subprocess

    out = tmp_path / "serving.json"
    result = subprocess.run(
        [*driver("experiments.serving.bench_serving"), "--dataset", "digits", "--generator",
         f"DiM={SHIPPED}", "--inpc", "1", "--rules", "confidence", "--seeds", "1", "--eval-epochs", "1",
         "--selector-epochs", "0", "--teacher-epochs", "0", "--json", str(out), *extra],
        cwd=tmp_path, capture_output=True, text=True, check=False, env=driver_env(OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_the_serving_benchmark_scores_every_row_of_both_label_columns(tmp_path):
    """Every row of both label columns is in the JSON (candidate selection and truncation rows
    with hard labels only)."""
    found = serving_bench(tmp_path, "--soft", "plain", "--truncation", "0.5")
    rows = {(r["training_set"], r["labels"]) for r in found["results"]}
    assert rows == {("random", "hard"), ("herding", "hard"), ("DiM fixed", "hard"), ("DiM fixed + confidence of 10x", "hard"),
                    ("DiM fixed, truncation 0.5", "hard"), ("DiM fresh", "hard"), ("random", "soft"), ("DiM fixed", "soft"), ("DiM fresh", "soft")}


@pytest.mark.slow
def test_the_serving_benchmark_without_soft_labels_trains_no_teacher(tmp_path):
    found = serving_bench(tmp_path, "--soft", "none", "--no-real")
    rows = {(r["training_set"], r["labels"]) for r in found["results"]}
    assert rows == {("DiM fixed", "hard"), ("DiM fixed + confidence of 10x", "hard"), ("DiM fresh", "hard")}
    assert "teacher" not in found["setup_seconds"] and found["teacher_test_accuracy"] is None
    assert "selector" in found["setup_seconds"]  # a candidate row ran


@pytest.mark.slow
def test_the_serving_benchmark_runs_only_the_named_rows_of_the_soft_column(tmp_path):
    found = serving_bench(tmp_path, "--soft", "plain", "--no-hard", "--no-real", "--only", "DiM fresh")
    assert [(r["training_set"], r["labels"]) for r in found["results"]] == [("DiM fresh", "soft")]
    assert "selector" not in found["setup_seconds"]  # no candidate row kept: no selection network trained


@pytest.mark.parametrize("flags, message", [
    (["--only", "DiM fixed", "DiM stale"], "--only names no row 'DiM stale'"),
    (["--no-hard", "--soft", "none"], "leaves no column"),
    (["--generator", "DiM"], "expects NAME=FOLDER"),
])
def test_the_serving_benchmark_refuses_bad_requests_in_one_line(tmp_path, flags, message, monkeypatch, capsys):
    import runpy
    import sys

    monkeypatch.setattr(sys, "argv", ["bench_serving", "--dataset", "digits", "--generator", f"DiM={SHIPPED}", "--inpc", "1",
                                      "--selector-epochs", "0", "--json", str(tmp_path / "x.json"), *flags])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("experiments.serving.bench_serving", run_name="__main__")
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
