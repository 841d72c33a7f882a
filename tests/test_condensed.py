import pickle

import pytest
import torch

from gencond.artifacts import CondensedSet
from gencond.data import DatasetInfo
from gencond.errors import GencondError

INFO = DatasetInfo("toy", 1, 8, tuple("abc"), (0.5,), (0.25,))


def toy_set(soft=False):
    images = torch.randn(6, 1, 8, 8)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    soft_labels = torch.softmax(torch.randn(6, 3), 1) if soft else None
    return CondensedSet(images, labels, INFO, soft_labels, method="random", config={"ipc": 2})


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".npz"])
@pytest.mark.parametrize("soft", [False, True])
def test_round_trip(tmp_path, suffix, soft):
    original = toy_set(soft)
    loaded = CondensedSet.load(original.save(tmp_path / f"set{suffix}"))
    assert torch.equal(loaded.images, original.images) and torch.equal(loaded.labels, original.labels)
    assert loaded.info == INFO and loaded.method == "random" and loaded.config == {"ipc": 2}
    assert (loaded.soft_labels is None) == (not soft)
    assert loaded.images_per_class().tolist() == [2, 2, 2]


def test_pt_file_loads_without_unpickling_code(tmp_path):
    path = tmp_path / "evil.pt"

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    with open(path, "wb") as f:
        pickle.dump({"images": Payload()}, f)
    with pytest.raises(GencondError, match="cannot read .* plain-tensor"):
        CondensedSet.load(path)


def test_missing_truncated_and_foreign_files(tmp_path):
    with pytest.raises(GencondError, match="no condensed set file"):
        CondensedSet.load(tmp_path / "none.safetensors")
    path = toy_set().save(tmp_path / "set.safetensors")
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(GencondError, match="truncated or not a condensed set"):
        CondensedSet.load(path)
    from safetensors.torch import save_file

    save_file({"weights": torch.zeros(3)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(GencondError, match="not a gencond condensed set"):
        CondensedSet.load(tmp_path / "model.safetensors")


def test_wrong_shapes_are_refused(tmp_path):
    good = toy_set()
    bad = CondensedSet(good.images[:, :, :4], good.labels, INFO)
    with pytest.raises(GencondError, match=r"images have shape \(6, 1, 4, 8\)"):
        bad.save(tmp_path / "bad.safetensors")
    bad = CondensedSet(good.images, good.labels + 5, INFO)
    with pytest.raises(GencondError, match="labels must lie"):
        bad.validate("x")
    other = DatasetInfo("other", 3, 32, tuple("abc"), (0.5,) * 3, (0.25,) * 3)
    with pytest.raises(GencondError, match="1x8x8 images of 3 classes, but other has 3x32x32"):
        good.check_matches(other, "set.safetensors")


def test_save_is_atomic(tmp_path):
    path = toy_set().save(tmp_path / "set.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    import os

    path = toy_set().save(tmp_path / "set.safetensors")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
