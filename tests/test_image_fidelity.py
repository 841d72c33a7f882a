"""Image fidelity through torch-fidelity with a feature extractor trained on the task's
data: known answers (identical sets, a shifted set), per-class figures, the bench's
fidelity report on the shipped generator, and one-line errors for missing weights."""

from pathlib import Path

import pytest
import torch

from gencond.engine.networks import real_data_network
from gencond.errors import GencondError
from gencond.evaluate import bench
from gencond.evaluate.bench import BenchConfig
from gencond.evaluate.image_fidelity import (
    FidelityExtractor,
    per_class_fidelity,
    register_task_extractor,
)

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "dim_digits"


@pytest.fixture(scope="module")
def task_extractor(digits):
    """A ConvNet-3 of width 16 trained one epoch: 256 features instead of 2,048, so each
    FID's eigenvalues take milliseconds instead of seconds. Described like an ``npz:PATH``
    dataset (path separators, which torch-fidelity refuses in a name)."""
    net = real_data_network(digits.train, "convnet3", 1, torch.device("cpu"), 0, width=16)
    return FidelityExtractor(register_task_extractor(net, digits.info, "npz:../data/digits test-convnet3"))


def test_an_extractor_named_after_a_dataset_path_registers_under_a_plain_name(task_extractor):
    assert task_extractor.name.startswith("gencond-npz_.._data_digits_test-convnet3-")
    assert "/" not in task_extractor.name and "\\" not in task_extractor.name


def test_identical_sets_have_zero_distance_and_full_precision_and_recall(task_extractor, digits):
    images, _ = digits.train.batch(torch.arange(200))
    found = task_extractor.metrics(images, images, digits.info, torch.device("cpu"))
    assert found["fid"] == pytest.approx(0.0, abs=1e-3)
    assert abs(found["kid_mean"]) < 0.02  # an unbiased estimate over random subsets: about 0, either sign
    assert found["precision"] == pytest.approx(1.0) and found["recall"] == pytest.approx(1.0)
    assert found["n_generated"] == found["n_real"] == 200 and found["isc_mean"] >= 1.0


def test_a_corrupted_set_is_farther_than_a_fresh_real_one(task_extractor, digits):
    real, _ = digits.train.batch(torch.arange(0, 300))
    other, _ = digits.train.batch(torch.arange(300, 600))
    noisy = other + 1.5 * torch.randn(other.shape, generator=torch.Generator().manual_seed(0))
    cpu = torch.device("cpu")
    assert task_extractor.metrics(other, real, digits.info, cpu)["fid"] < task_extractor.metrics(noisy, real, digits.info, cpu)["fid"]


def test_per_class_figures_cover_every_class(task_extractor, digits):
    images, labels = digits.train.batch(torch.arange(len(digits.train)))
    keep = torch.cat([torch.nonzero(labels == c).squeeze(1)[:20] for c in range(10)])
    report = per_class_fidelity(task_extractor, images[keep], labels[keep], images[keep], labels[keep], digits.info,
                                torch.device("cpu"))
    assert set(report["per_class"]) == set(digits.info.class_names)
    assert all(v["n_generated"] == 20 and v["fid"] == pytest.approx(0.0, abs=1e-2) for v in report["per_class"].values())


def test_missing_inception_weights_end_with_one_line(tmp_path, cli_error):
    with pytest.raises(GencondError, match="not found"):
        FidelityExtractor.inception(str(tmp_path / "missing.pth"))
    cli_error(["bench", "--fidelity", "--fidelity-extractor", "inception", "--output-dir", tmp_path / "b"],
              "no download")


def test_bench_reports_fidelity_of_each_generator(tmp_path):
    cfg = BenchConfig(sets=[f"DiM=generator:{SHIPPED}"], inpc=[1], seeds=1, full_data=False, fidelity=True,
                      fidelity_inpc=10, fidelity_net_epochs=1, output_dir=str(tmp_path / "b"), device="cpu")
    cfg.train.epochs = 1
    report = bench.run_bench(cfg, log=lambda _: None)
    found = report["fidelity"]["DiM"]
    assert found["all"]["n_generated"] == 100 and found["all"]["fid"] > 0
    assert len(found["per_class"]) == 10 and 0 <= found["class_fidelity"] <= 100
    assert "convnet3 trained 1 epochs" in found["extractor"]
    assert (tmp_path / "b" / "samples_DiM.png").is_file()
