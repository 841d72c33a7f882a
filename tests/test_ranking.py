"""The NAS-Bench-201 cell networks and DC-BENCH's architecture-ranking protocol: genotype
parsing, a cell that is the identity, rank correlation known answers, the protocol end to
end on digits (validation split only, cached) and its one-line errors."""

import dataclasses

import pytest
import torch

from gencond.errors import GencondError
from gencond.evaluate import bench, ranking
from gencond.evaluate.bench import BenchConfig
from gencond.evaluate.ranking import RankingConfig, rank_correlation
from gencond.models import create_network
from gencond.models.cells import Cell, parse_genotype, sample_genotypes

IDENTITY = "|skip_connect~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|"


def test_genotypes_parse_into_edges_per_node_or_fail_with_one_reason():
    nodes = parse_genotype("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|")
    assert nodes == [[("nor_conv_3x3", 0)], [("skip_connect", 0), ("nor_conv_1x1", 1)],
                     [("none", 0), ("avg_pool_3x3", 1), ("nor_conv_3x3", 2)]]
    for bad in ("", "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|",
                "|none~0|+|none~0|none~1|"):
        with pytest.raises(GencondError, match="NAS-Bench-201 genotype"):
            parse_genotype(bad)


def test_sampled_genotypes_are_distinct_valid_and_reproducible():
    drawn = sample_genotypes(20, seed=3)
    assert len(set(drawn)) == 20 and drawn == sample_genotypes(20, seed=3) and drawn != sample_genotypes(20, seed=4)
    for g in drawn:
        parse_genotype(g)
    with pytest.raises(GencondError, match="15625"):
        sample_genotypes(15626, 0)


def test_a_cell_of_skips_and_zeros_is_the_identity():
    x = torch.randn(2, 4, 5, 5)
    assert torch.equal(Cell(parse_genotype(IDENTITY), 4)(x), x)


@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32)])
def test_cell_networks_classify_dataset_shapes(channels, size):
    net = create_network("nb201_cell", 10, channels, size, genotype=sample_genotypes(1, 0)[0], cells_per_stage=2)
    assert net(torch.randn(2, channels, size, size)).shape == (2, 10)
    assert net.forward_head(net.forward_features(torch.randn(2, channels, size, size)), pre_logits=True).shape == (2, 64)


def test_rank_correlation_known_answers():
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert rank_correlation([5, 5, 5], [1, 2, 3]) == 0.0


def test_ranking_runs_on_the_validation_split_and_resumes_from_the_cache(tmp_path, monkeypatch):
    cfg = BenchConfig(sets=["random"], inpc=[2], arch=["convnet3"], augment=["none"], seeds=1, validation_per_class=5,
                      output_dir=str(tmp_path / "b"), full_cache=str(tmp_path / "full.jsonl"), device="cpu",
                      ranking=RankingConfig(networks=3, net_epochs=1))
    cfg.train.epochs = 2
    read, epochs = [], []
    original = ranking.train_and_test

    def spy(*a, **k):
        read.append(len(a[2]))
        epochs.append((a[1].size, a[3].epochs))
        return original(*a, **k)

    monkeypatch.setattr(ranking, "train_and_test", spy)
    report = bench.run_bench(cfg, log=lambda _: None)["ranking"]
    assert report["scored_on"] == "validation split" and set(read) == {50}  # 5 per class, never the test split
    # the ground truth trains net_epochs on the whole split; the 20-image set the bench's own epochs (set_epochs 0)
    assert set(epochs) == {(len(cfg.load_splits().train), 1), (20, 2)}
    assert len(report["genotypes"]) == 3 and len(report["full_data"]) == 3
    found = report["sets"][0]
    assert found["training_set"] == "random" and -1.0 <= found["spearman"] <= 1.0
    assert found["top1_full_data_accuracy"] in report["full_data"]

    monkeypatch.setattr(ranking, "train_and_test", lambda *a, **k: pytest.fail("a cached ranking cell was retrained"))
    assert bench.run_bench(cfg, log=lambda _: None)["ranking"] == report

    # two worker processes train the same networks side by side, each from its own seed
    monkeypatch.setattr(ranking, "train_and_test", original)
    side_by_side = dataclasses.replace(cfg, workers=2, output_dir=str(tmp_path / "b2"), full_cache=str(tmp_path / "f2.jsonl"))
    again = bench.run_bench(side_by_side, log=lambda _: None)["ranking"]
    assert again["genotypes"] == report["genotypes"]
    assert again["full_data"] == pytest.approx(report["full_data"], abs=4.0)  # 2 of 50 images: thread counts differ
    assert again["sets"][0]["accuracies"] == pytest.approx(found["accuracies"], abs=4.0)


@pytest.mark.parametrize("argv, message", [
    (["--ranking.networks", "3"], "validation_per_class"),
    (["--ranking.networks", "3", "--validation-per-class", "5", "--no-full-data"], "ground truth"),
    (["--ranking.networks", "1", "--validation-per-class", "5"], "at least 2"),
])
def test_bad_ranking_requests_end_with_one_line(cli_error, tmp_path, argv, message):
    cli_error(["bench", "--output-dir", tmp_path / "b", "--full-cache", tmp_path / "f.jsonl", *argv], message)
