"""Sets of any size: every image is a function of (seed, class, slot) alone, so a set is
the prefix of any larger one and streams in bounded runs; ``gencond sample`` writes large
sets in shards and refuses, in one line and before any work, a request that cannot fit."""

import json

import pytest
import torch

from gencond.artifacts import CondensedSet
from gencond.cli import main
from gencond.data import load_dataset
from gencond.engine.sampling import LATENT_BLOCK, set_chunks, stream_set
from gencond.models import CodebookGenerator, DiMGenerator
from gencond.serve import GeneratorDataset, sample_set

DIGITS = load_dataset("digits").info.to_dict()


@pytest.fixture(scope="module")
def dim():
    torch.manual_seed(0)
    return DiMGenerator(num_classes=10, channels=1, image_size=32, width=8, noise_dim=16, dataset=DIGITS)


@pytest.fixture(scope="module")
def codebook():
    torch.manual_seed(0)
    return CodebookGenerator(num_classes=10, channels=1, image_size=32, codebook_size=3, code_dim=5, feature_dim=6,
                             embed_dim=2, width=8, dataset=DIGITS)


@pytest.fixture(scope="module")
def folder(dim, tmp_path_factory):
    return dim.save_pretrained(tmp_path_factory.mktemp("dim") / "generator")


# Images generated in batches of another composition may differ in the last bits (kernels
# pick their blocking by batch size), so sets drawn in different runs compare with a tolerance.
same = torch.testing.assert_close


def sample(*argv) -> int:
    return main([str(a) for a in ("sample", *argv)])


def per_class(images: torch.Tensor, classes: int) -> torch.Tensor:
    return images.view(classes, -1, *images.shape[1:])


def test_a_set_is_the_prefix_of_every_larger_set_across_latent_blocks(dim):
    small, large = sample_set(dim, 3, seed=2), sample_set(dim, LATENT_BLOCK + 5, seed=2)
    same(per_class(large.images, 10)[:, :3], per_class(small.images, 10))
    middle = sample_set(dim, LATENT_BLOCK + 1, seed=2)
    same(per_class(large.images, 10)[:, :LATENT_BLOCK + 1], per_class(middle.images, 10))
    assert not torch.equal(per_class(large.images, 10)[0, 0], per_class(large.images, 10)[0, LATENT_BLOCK])


def test_a_class_draws_the_same_images_whatever_other_classes_are_asked_for(dim):
    both = sample_set(dim, 4, seed=1, classes=[3, 7])
    alone = sample_set(dim, 4, seed=1, classes=[7])
    same(both.images[4:], alone.images)
    same(sample_set(dim, 4, seed=1).images[12:16], both.images[:4])
    assert not torch.equal(sample_set(dim, 4, seed=2, classes=[7]).images, alone.images)


@pytest.mark.parametrize("chunk", [1, 7, 30, 10_000])
def test_streamed_runs_are_bounded_and_join_into_the_sampled_set(dim, chunk):
    whole = sample_set(dim, 6, seed=3)
    runs = list(stream_set(dim, 6, seed=3, chunk=chunk))
    assert max(len(labels) for _, labels, _ in runs) <= chunk
    same(torch.cat([r[0] for r in runs]), whole.images)
    assert torch.equal(torch.cat([r[1] for r in runs]), whole.labels)


def test_set_chunks_cover_every_slot_once_in_class_major_order():
    pieces = [p for run in set_chunks(torch.tensor([4, 1]), 5, 3) for p in run]
    assert pieces == [(4, 0, 3), (4, 3, 5), (1, 0, 1), (1, 1, 4), (1, 4, 5)]


def test_beyond_k_codes_serve_deterministically(codebook):
    """INPC > K: the first K images are the codes themselves (the same for every seed), the
    rest a learned code plus noise, the same for the same seed and class in every sampler."""
    a, b = sample_set(codebook, 8, seed=5), sample_set(codebook, 8, seed=5)
    assert torch.equal(a.images, b.images)
    other = sample_set(codebook, 8, seed=6)
    same(per_class(a.images, 10)[:, :3], per_class(other.images, 10)[:, :3])
    assert not torch.equal(per_class(a.images, 10)[:, 3:], per_class(other.images, 10)[:, 3:])
    served = GeneratorDataset(codebook, inpc=8, seed=5, classes=[2, 9])
    same(torch.stack([served[i][0] for i in range(len(served))]),
         torch.cat([per_class(a.images, 10)[2], per_class(a.images, 10)[9]]))


@pytest.mark.parametrize("fmt", ["safetensors", "npz"])
def test_sample_writes_a_large_set_as_shards_that_load_as_one(folder, dim, tmp_path, fmt, monkeypatch):
    saved = []
    original = CondensedSet.save
    monkeypatch.setattr(CondensedSet, "save", lambda self, path: saved.append(len(self)) or original(self, path))
    assert sample("--checkpoint", folder, "--inpc", "7", "--format", fmt, "--shard-size", "30",
                 "--out", tmp_path / "set", "--seed", "4") == 0
    index = json.loads((tmp_path / "set" / "index.json").read_text())
    assert index["images"] == 70 and len(index["shards"]) == 3 and saved == [30, 30, 10]
    loaded = CondensedSet.load(tmp_path / "set")
    expected = sample_set(dim, 7, seed=4)
    same(loaded.images, expected.images)
    assert torch.equal(loaded.labels, expected.labels)
    assert loaded.config["inpc"] == 7 and loaded.method == expected.method


def test_sample_writes_a_small_set_as_one_file_and_png_folders_in_runs(folder, dim, tmp_path):
    assert sample("--checkpoint", folder, "--inpc", "3", "--format", "safetensors",
                 "--out", tmp_path / "small") == 0
    same(CondensedSet.load(tmp_path / "small.safetensors").images, sample_set(dim, 3).images)
    assert sample("--checkpoint", folder, "--inpc", "3", "--shard-size", "4", "--out", tmp_path / "png") == 0
    files = sorted(p.relative_to(tmp_path / "png").as_posix() for p in (tmp_path / "png").rglob("*.png"))
    assert len(files) == 30 and files[:3] == ["0_0/00000.png", "0_0/00001.png", "0_0/00002.png"]


def test_a_request_that_cannot_fit_is_one_line_before_any_work(folder, tmp_path, cli_error, monkeypatch):
    import gencond.engine.sampling as sampling

    monkeypatch.setattr(sampling, "generate_in_batches", lambda *a, **k: pytest.fail("generated before refusing"))
    cli_error(["sample", "--checkpoint", folder, "--inpc", "100000000", "--format", "npz", "--out", tmp_path / "x"],
              "free")
    cli_error(["sample", "--checkpoint", folder, "--inpc", "100000000", "--out", tmp_path / "x"], "free")
    cli_error(["sample", "--checkpoint", folder, "--inpc", "50", "--format", "pt", "--shard-size", "100",
               "--out", tmp_path / "x"], "written whole")
    cli_error(["sample", "--checkpoint", folder, "--inpc", "5", "--shard-size", "0"], "positive")
