import numpy as np
import pytest
import torch
from PIL import Image

from gencond.data import ClassSampler, load_dataset
from gencond.data.base import PathTable
from gencond.errors import GencondError
from gencond.methods.coresets import random_selection


def test_digits_is_the_embedded_default(digits):
    assert digits.info.name == "digits" and digits.info.channels == 1 and digits.info.image_size == 32
    assert len(digits.train) + len(digits.test) == 1797
    counts = digits.test.class_counts()
    assert counts.min() >= 40 and counts.sum() == len(digits.test)
    x, y = digits.train.batch(torch.arange(8))
    assert x.shape == (8, 1, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.long


def test_digits_split_is_deterministic_and_normalized(digits):
    again = load_dataset("digits")
    assert torch.equal(again.train.array, digits.train.array)
    assert torch.equal(again.test.labels, digits.test.labels)
    x = digits.train.images(torch.arange(len(digits.train)))
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-2


def test_mnist_from_shared_data(shared_data):
    splits = load_dataset("mnist", shared_data)
    assert (len(splits.train), len(splits.test)) == (17435, 10000)
    assert splits.info.mean == (0.1307,) and splits.info.image_size == 28


def test_missing_named_dataset_says_where_it_looked(tmp_path):
    with pytest.raises(GencondError, match=f"mnist: no readable data under {tmp_path}.*--download"):
        load_dataset("mnist", tmp_path)


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(GencondError, match="unknown dataset 'mnits'.*digits"):
        load_dataset("mnits")


def write_npz(path, n=20, size=8, channels=3, classes=True):
    rng = np.random.default_rng(0)
    arrays = {
        "x": rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8),
        "y": np.arange(n) % 4,
    }
    if classes:
        arrays["classes"] = np.array(["a", "b", "c", "d"])
    np.savez(path, **arrays)
    return arrays


def test_npz_folder_and_train_file(tmp_path):
    arrays = write_npz(tmp_path / "train.npz")
    write_npz(tmp_path / "test.npz", n=8)
    for spec in (f"npz:{tmp_path}", f"npz:{tmp_path / 'train.npz'}"):
        splits = load_dataset(spec)
        assert splits.info.class_names == ("a", "b", "c", "d") and splits.info.channels == 3
        assert (len(splits.train), len(splits.test)) == (20, 8)
        assert torch.equal(splits.train.array[3], torch.as_tensor(arrays["x"][3]).permute(2, 0, 1))
        mean = arrays["x"].reshape(-1, 3).mean(0) / 255
        np.testing.assert_allclose(splits.info.mean, mean, rtol=1e-5)


def test_npz_errors_are_one_clear_line(tmp_path):
    with pytest.raises(GencondError, match="no file at"):
        load_dataset(f"npz:{tmp_path}")
    (tmp_path / "train.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(GencondError, match="cannot read"):
        load_dataset(f"npz:{tmp_path}")
    np.savez(tmp_path / "train.npz", x=np.zeros((4, 8, 8, 3), np.float32), y=np.zeros(4, int))
    with pytest.raises(GencondError, match="uint8"):
        load_dataset(f"npz:{tmp_path}")
    np.savez(tmp_path / "train.npz", images=np.zeros((4, 8, 8, 3), np.uint8))
    with pytest.raises(GencondError, match="lacks the array"):
        load_dataset(f"npz:{tmp_path}")


def test_image_folder_reads_lazily_at_the_chosen_resolution(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    for c in ("n01", "n02"):
        (root / "train" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (80, 72), color=(40 * i, 200, 30)).save(root / "train" / c / f"{i}.png")
    (root / "val" / "images").mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(root / "val" / "images" / "v0.png")
    (root / "val" / "val_annotations.txt").write_text("v0.png\tn02\t0\t0\t10\t10\n")
    splits = load_dataset("tinyimagenet", tmp_path, image_size=16)
    assert splits.info.class_names == ("n01", "n02") and len(splits.train) == 6
    assert splits.test.labels.tolist() == [1]
    x, y = splits.train.batch(torch.tensor([0, 4]))
    assert x.shape == (2, 3, 16, 16) and y.tolist() == [0, 1]


def test_image_folder_missing_root_is_clear(tmp_path):
    with pytest.raises(GencondError, match="imagenet: no ImageFolder training data found"):
        load_dataset("imagenet", tmp_path)


def test_class_sampler_returns_distinct_images_of_the_asked_classes(digits):
    sampler = ClassSampler(digits.train, seed=0)
    idx = sampler.indices([3, 7], 25)
    labels = digits.train.labels[idx]
    assert labels[:25].eq(3).all() and labels[25:].eq(7).all()
    assert len(set(idx.tolist())) == 50
    # more than a class holds: every image of the class, once
    count = int(digits.train.class_counts()[5])
    assert sorted(sampler.indices([5], 10_000).tolist()) == sorted(torch.nonzero(digits.train.labels == 5).flatten().tolist())
    assert len(sampler.indices([5], 10_000)) == count
    x = sampler.sample_class(2, 4)
    assert x.shape == (4, 1, 32, 32)


def test_class_sampler_is_seeded(digits):
    a = ClassSampler(digits.train, seed=3).indices(range(10), 5)
    b = ClassSampler(digits.train, seed=3).indices(range(10), 5)
    c = ClassSampler(digits.train, seed=4).indices(range(10), 5)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_random_selection_checks_the_size(digits):
    idx = random_selection(digits.train, 10, seed=0)
    assert torch.bincount(digits.train.labels[idx], minlength=10).tolist() == [10] * 10
    with pytest.raises(GencondError, match="positive"):
        random_selection(digits.train, 0)
    with pytest.raises(GencondError, match="IPC 500 is larger than class"):
        random_selection(digits.train, 500)


def test_aligned_sampling_matches_labels_position_by_position(digits):
    sampler = ClassSampler(digits.train, seed=0)
    grouped = torch.tensor([1, 1, 1, 4, 4, 4, 9, 9, 9])
    idx = sampler.indices_aligned(grouped)
    assert torch.equal(digits.train.labels[idx], grouped) and len(set(idx.tolist())) == 9
    mixed = torch.tensor([3, 0, 3, 7, 0])
    assert torch.equal(digits.train.labels[sampler.indices_aligned(mixed)], mixed)


@pytest.mark.parametrize("paths", [["/data/train/n01/a.JPEG", "/data/train/n02/b.JPEG", "/data/train/n01/é.png"],
                                   ["./a/x.png", "./a/y.png"], ["/x.png", "/y.png"], ["one.png"], [],
                                   ["/data/latin1-\udce9.png"],  # a file name that is not UTF-8
                                   ["/d/ab.png", "/d/ab.png.png", "/d/abab.png", "/e/ab"]])  # overlapping start and end
def test_a_path_table_gives_back_every_path_exactly(paths):
    table = PathTable(paths)
    assert list(table) == paths and len(table) == len(paths)
    if paths:
        assert table[-1] == paths[-1]
    with pytest.raises(IndexError):
        table[len(paths)]


def test_a_path_table_holds_imagenet_style_paths_in_a_fraction_of_a_list_of_strings():
    import sys

    paths = [f"/datasets/imagenet/train/n{c:08d}/n{c:08d}_{i}.JPEG" for c in range(100) for i in range(50)]
    as_list = sys.getsizeof(paths) + sum(sys.getsizeof(p) for p in paths)
    table = PathTable(paths)
    assert table.heads == [f"/datasets/imagenet/train/n{c:08d}/n{c:08d}_" for c in range(100)]
    assert set(table.tails) == {".JPEG"} and table.bytes.nbytes == 100 * (10 * 1 + 40 * 2)  # "0" ... "49"
    assert table.offsets.dtype == np.int32 and table.nbytes < as_list / 5


def test_synthetic_imagenet_reads_in_its_layout_and_skips_unreadable_files(tmp_path, capsys):
    from gencond.data.synthetic import write_synthetic_imagenet

    write_synthetic_imagenet(tmp_path, classes=4, train_per_class=2, val_per_class=1, size=24, unreadable=1)
    assert sorted(p.name for p in (tmp_path / "val").iterdir()) == ["n10000000", "n10000001", "n10000002", "n10000003"]
    splits = load_dataset("imagenet", tmp_path, image_size=16)
    assert (splits.info.num_classes, len(splits.train), len(splits.test)) == (4, 8, 4)
    x, y = splits.train.batch(torch.arange(8))
    assert x.shape == (8, 3, 16, 16) and y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert torch.equal(x[0], x[1])  # class 0's broken first file: its other image stands in
    assert not torch.equal(x[2], x[3]) and splits.train.unreadable == {str(tmp_path / "train" / "n10000000" / "n10000000_0.JPEG")}
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "skipped unreadable image" in err[0] and "(1 unreadable so far)" in err[0]
    splits.train.batch(torch.tensor([0]))
    assert capsys.readouterr().err == ""  # counted once, not again
    class_means = x.mean(dim=(2, 3))
    assert (class_means[2] - class_means[4]).abs().max() > 0.1  # classes look different


def test_synthetic_imagenet_class_without_readable_image_and_bad_layouts_are_one_line(tmp_path):
    from gencond.data.synthetic import write_synthetic_imagenet

    write_synthetic_imagenet(tmp_path / "a", classes=2, train_per_class=1, val_per_class=1, size=16, unreadable=1)
    splits = load_dataset("imagenet", tmp_path / "a", image_size=8)
    with pytest.raises(GencondError, match="no image of class n10000000 can be read"):
        splits.train.batch(torch.tensor([0]))
    flat = tmp_path / "flat"
    write_synthetic_imagenet(flat, classes=2, train_per_class=1, val_per_class=1, size=16)
    for folder in (flat / "val").iterdir():
        for image in folder.iterdir():
            image.rename(flat / "val" / image.name)
        folder.rmdir()
    with pytest.raises(GencondError, match="sort them into val/<wnid>/ first"):
        load_dataset("imagenet", flat)
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(GencondError, match="is not ROOT/train/<class>/<image>"):
        load_dataset("imagenet", tmp_path / "empty")
    with pytest.raises(GencondError, match="unreadable between 0 and classes"):
        write_synthetic_imagenet(tmp_path / "b", classes=2, unreadable=3)


def test_a_stand_in_for_an_unreadable_file_comes_from_the_same_view(tmp_path, capsys):
    from gencond.data.base import SubsetImageSet
    from gencond.data.synthetic import write_synthetic_imagenet

    write_synthetic_imagenet(tmp_path, classes=2, train_per_class=3, val_per_class=1, size=16, unreadable=1)
    base = load_dataset("imagenet", tmp_path, image_size=8).train  # class 0: files 0 (broken), 1, 2
    view = SubsetImageSet(base, torch.tensor([0, 2, 3, 4, 5]))  # file 1 held out, as a carved validation split
    assert torch.equal(view.images(torch.tensor([0])), base.images(torch.tensor([2])))
    assert torch.equal(base.images(torch.tensor([0])), base.images(torch.tensor([1])))
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_data_pipeline_study_runs_at_a_tiny_size(tmp_path):
    import json
    import subprocess

    from conftest import driver, driver_env

    out = tmp_path / "r.json"
    result = subprocess.run([*driver("experiments.data_pipeline.bench_data_pipeline"), "--root", str(tmp_path / "data"),
                             "--work", str(tmp_path / "work"), "--classes", "3", "--train-per-class", "8", "--size",
                             "24", "--image-size", "8", "--batch", "4", "--large-batch", "8", "--batches", "2",
                             "--per-class", "2", "--repeats", "1", "--chunk", "2", "--kill-after", "1", "--index-files", "3000",
                             "--json", str(out)], capture_output=True, text=True, timeout=300, check=False,
                            env=driver_env())
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["index"]["files"] == 3000 and report["kill_and_resume"]["bitwise_identical"]
    assert len(report["readers"]) == 11 and all(r["images_per_s"] > 0 for r in report["readers"])
    assert report["prepare"]["images"] == 3 * 9
