"""Model selection by held-out data: the validation split carved from the training data,
generator states chosen by their validation score, and the test split never read."""

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from gencond.cli import main
from gencond.data import DataConfig, DatasetSplits, ImageSet
from gencond.data.sampler import carve_validation
from gencond.engine import RealBatchConfig
from gencond.errors import GencondError
from gencond.methods.codebook import CodebookConfig, train_codebook
from gencond.methods.dim import DiMConfig, train_dim

SELECT = {"validation_per_class": 5, "select_by": "validation", "validation_inpc": 2, "validation_epochs": 3}


def test_validation_split_is_carved_per_class_and_never_overlaps_training(digits):
    train, validation = carve_validation(digits.train, 7, seed=4)
    assert validation.class_counts().tolist() == [7] * 10
    assert len(train) + len(validation) == len(digits.train)
    assert not set(train.indices.tolist()) & set(validation.indices.tolist())
    torch.testing.assert_close(validation.images(torch.arange(3)), digits.train.images(validation.indices[:3]))
    assert torch.equal(carve_validation(digits.train, 7, seed=4)[1].indices, validation.indices)
    assert not torch.equal(carve_validation(digits.train, 7, seed=5)[1].indices, validation.indices)
    for bad in (0, int(digits.train.class_counts().min())):
        with pytest.raises(GencondError, match="validation split"):
            carve_validation(digits.train, bad, seed=0)


def test_data_config_carves_the_validation_split(digits):
    splits = DataConfig(dataset="digits", validation_per_class=5, seed=1).load_splits()
    assert len(splits.validation) == 50 and len(splits.train) == len(digits.train) - 50
    assert DataConfig(dataset="digits").load_splits().validation is None


class UnreadableImageSet(ImageSet):
    """A test split that fails the moment anything reads it."""

    def __init__(self, info):
        self.info = info

    def __getattribute__(self, name):
        if name in ("labels", "images", "batch", "class_counts", "__len__"):
            raise AssertionError(f"the test split was read ({name}) before the final evaluation")
        return super().__getattribute__(name)


@pytest.fixture
def test_split_unreadable(monkeypatch):
    load = DataConfig.load_splits

    def guarded(self):
        splits = load(self)
        return DatasetSplits(splits.train, UnreadableImageSet(splits.info), splits.validation)

    monkeypatch.setattr(DataConfig, "load_splits", guarded)


def test_the_guard_fails_when_the_test_split_is_read(digits, test_split_unreadable):
    test = DataConfig(dataset="digits").load_splits().test
    with pytest.raises(AssertionError, match="test split was read"):
        test.images(torch.arange(2))
    with pytest.raises(AssertionError, match="test split was read"):
        len(test)


TINY_CODEBOOK = CodebookConfig(dataset="digits", epochs=3, steps_per_epoch=1, codebook_size=2, code_dim=8, embed_dim=8,
                               width=8, feature_net_epochs=0, class_feature_images=16, association_size=4,
                               phi_training=RealBatchConfig(batches=1, batch_size=16, dsa_strategy="none"), seed=1,
                               **SELECT)


def test_codebook_exports_the_best_validation_state_without_reading_the_test_split(tmp_path, test_split_unreadable):
    folder = train_codebook(replace(TINY_CODEBOOK, output_dir=str(tmp_path)))
    selection = json.loads((tmp_path / "summary.json").read_text())["selection"]
    scores = {int(k): v for k, v in selection["scores"].items()}
    assert sorted(scores) == [1, 2, 3] and selection["validation_images"] == 50
    best = max(scores.values())
    assert selection["selected_epoch"] == min(e for e, s in scores.items() if s == best)
    assert selection["validation_score"] == best
    exported, kept = load_file(str(folder / "model.safetensors")), load_file(str(tmp_path / "selected" / "model.safetensors"))
    assert exported.keys() == kept.keys() and all(torch.equal(exported[k], kept[k]) for k in kept)
    training = json.loads((folder / "config.json").read_text())["_training"]
    assert training["selected_epoch"] == selection["selected_epoch"] and training["validation_per_class"] == 5
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["validation_score"] for r in logged] == [round(scores[e], 3) for e in (1, 2, 3)]


def test_dim_matches_from_the_best_gan_state(tmp_path, test_split_unreadable):
    cfg = DiMConfig(dataset="digits", width=8, batch_size=16, gan_epochs=2, match_epochs=1, steps_per_epoch=2,
                    pool=["convnet3"], pool_training=RealBatchConfig(batches=1, batch_size=16), match_batch=20, seed=3,
                    output_dir=str(tmp_path), **SELECT)
    train_dim(cfg)
    selection = json.loads((tmp_path / "summary.json").read_text())["selection"]
    gan_scores = {int(k): v for k, v in selection["scores"].items() if int(k) <= 2}
    phase1 = json.loads((tmp_path / "generator_phase1" / "config.json").read_text())["_training"]
    assert phase1["selected_epoch"] == max(gan_scores, key=lambda e: (gan_scores[e], -e))
    assert sorted(int(k) for k in selection["scores"]) == [1, 2, 3]


def test_selection_by_validation_needs_a_validation_split(capsys):
    with pytest.raises(GencondError, match="validation_per_class"):
        replace(TINY_CODEBOOK, validation_per_class=0).check()
    assert main(["train", "codebook", "--dataset", "digits", "--select-by", "validation", "--epochs", "1"]) == 2
    error = capsys.readouterr().err.strip()
    assert "validation_per_class" in error and "\n" not in error
