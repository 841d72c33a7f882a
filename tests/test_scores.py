"""DD-Ranking's scores (gencond.evaluate.scores) against numbers worked out by hand, and
their place in gencond bench's metrics."""

import math

import pytest

from gencond.evaluate.bench import improvement_metrics
from gencond.evaluate.protocol import RowResult
from gencond.evaluate.scores import augmentation_robust_score, label_robust_score, normalised_exp


def test_the_normalisation_maps_minus_one_to_zero_and_one_to_one():
    assert normalised_exp(-1.0) == pytest.approx(0.0, abs=1e-15)
    assert normalised_exp(1.0) == pytest.approx(1.0)
    # (1 - e^-1) / (e - e^-1) = 0.63212 / 2.35040
    assert normalised_exp(0.0) == pytest.approx(0.26894142, abs=1e-8)


def test_lrs_of_leaderboard_rows_worked_by_hand():
    # DD-Ranking's CIFAR-10 IPC-1 hard-label DC row: HLR 52.66, IOR 12.40 (points).
    # alpha = 0.5 * 0.1240 - 0.5 * 0.5266 = -0.2013; e^-0.2013 = 0.817660; e^-1 = 0.367879;
    # (0.817660 - 0.367879) / (2.718282 - 0.367879) = 0.191366
    assert label_robust_score(12.40, 52.66) == pytest.approx(19.1366, abs=1e-4)
    # DATM soft-label row: HLR 26.84, IOR 35.05: alpha = +0.04105, e^alpha = 1.041904 -> 28.677 %
    assert label_robust_score(35.05, 26.84) == pytest.approx(28.6770, abs=1e-4)
    # HLR 0 and IOR 100 is a perfect set; HLR 100 and IOR 0 scores alpha = -0.5
    assert label_robust_score(100.0, 0.0) == pytest.approx(100 * normalised_exp(0.5))
    assert label_robust_score(0.0, 100.0) == pytest.approx(100 * (math.exp(-0.5) - math.exp(-1)) / (math.e - math.exp(-1)))


def test_lrs_with_percent_inputs_is_the_official_codes_literal_formula():
    # alpha = 0.5 * 12.40 - 0.5 * 52.66 = -20.13: (e^-20.13 - e^-1) / (e - e^-1) = -0.156518
    assert label_robust_score(12.40, 52.66, percent_inputs=True) == pytest.approx(-0.156518, abs=1e-6)


def test_ars_weighs_the_improvement_with_and_without_augmentation_equally():
    # beta = 0.5 * 0.10 + 0.5 * 0.20 = 0.15; (e^0.15 - e^-1) / (e - e^-1) = (1.161834 - 0.367879) / 2.350402
    assert augmentation_robust_score(10.0, 20.0) == pytest.approx(33.7795, abs=1e-4)
    assert augmentation_robust_score(10.0, 20.0, weight=1.0) == pytest.approx(100 * normalised_exp(0.10))


def row(name, ipc, mean, augment="", labels="hard"):
    return RowResult(name, ipc, "convnet3", [mean], [1.0], labels=labels, augment=augment)


def test_bench_metrics_give_lrs_per_label_column_and_ars_across_augmentations():
    results = [row("full", None, 90.0, "dsa"), row("full", None, 85.0, "none"),
               row("random", 10, 50.0, "dsa"), row("random", 10, 40.0, "none"),
               row("random", 10, 55.0, "dsa", "soft"),
               row("DM", 10, 70.0, "dsa"), row("DM", 10, 65.0, "none"), row("DM", 10, 75.0, "dsa", "soft")]
    metrics = improvement_metrics(results)
    hard = metrics[("DM", 10, "convnet3, dsa")]
    assert hard["ior"] == pytest.approx(20.0) and hard["hlr"] == pytest.approx(20.0)
    assert hard["lrs"] == pytest.approx(label_robust_score(20.0, 20.0)) == pytest.approx(26.894, abs=1e-3)
    soft = metrics[("DM", 10, "convnet3, dsa, soft labels")]
    # soft IOR against soft random images; HLR stays the hard-label recovery of the same set
    assert soft["ior"] == pytest.approx(20.0) and soft["hlr"] == pytest.approx(20.0)
    assert hard["ars"] == pytest.approx(augmentation_robust_score(20.0, 25.0))  # without augmentation: 65 - 40
    assert "ars" not in metrics[("DM", 10, "convnet3, none")]  # the unaugmented column is ARS's other half
    assert "ars" not in soft  # no soft-label run without augmentation
