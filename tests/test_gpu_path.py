"""The GPU path: ``gencond prepare`` and ``prepared:DIR`` (the same images as the source,
unreadable files listed and left out, a killed prepare resumed to the same bytes, Hugging Face
datasets read); the loader workers' batches; the CUDA settings; the dry device check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import gencond.data.prepared as prepared_module
from gencond.cli import main
from gencond.data import load_dataset, prepare
from gencond.data.loader import read_batches
from gencond.data.synthetic import write_synthetic_imagenet
from gencond.errors import GencondError
from gencond.runtime import cuda_settings, optimizer_options


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("jpegs")
    write_synthetic_imagenet(root, classes=5, train_per_class=6, val_per_class=2, size=40, unreadable=2)
    return root


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and p.name != ".lock"}


def test_a_prepared_folder_holds_the_readable_images_of_its_source(jpegs, tmp_path, capsys):
    code = main(["prepare", "imagenet", "--data-root", str(jpegs), "--image-size", "16", "--output",
                 str(tmp_path / "p"), "--workers", "2", "--chunk", "4"])
    out = capsys.readouterr().out
    assert code == 0 and "train 28 images (2 unreadable" in out and "test 10 images" in out
    source, ready = load_dataset("imagenet", jpegs, image_size=16), load_dataset(f"prepared:{tmp_path / 'p'}")
    broken = {jpegs / "train" / f"n1000000{c}" / f"n1000000{c}_0.JPEG" for c in (0, 1)}
    skipped = (tmp_path / "p" / "train" / "skipped.txt").read_text().splitlines()
    assert {Path(line.split("\t")[0]) for line in skipped} == broken and all("\t" in line for line in skipped)
    readable = torch.tensor([i for i in range(len(source.train)) if Path(source.train.paths[i]) not in broken])
    assert torch.equal(ready.train.pixels(torch.arange(28)), source.train.pixels(readable))
    assert torch.equal(ready.train.labels, source.train.labels[readable])
    assert torch.equal(ready.test.images(torch.arange(10)), source.test.images(torch.arange(10)))
    assert ready.info.mean == source.info.mean and ready.info.class_names == source.info.class_names
    # a second run finds it finished; another source at the same folder refuses
    assert prepare("imagenet", tmp_path / "p", 16, jpegs, progress=False)["splits"]["train"]["count"] == 28
    with pytest.raises(GencondError, match="holds another prepared dataset"):
        prepare("imagenet", tmp_path / "p", 24, jpegs, progress=False)


def test_evaluation_reads_a_prepared_folder(jpegs, tmp_path, capsys):
    prepare("imagenet", tmp_path / "p", 16, jpegs, progress=False)
    code = main(["eval", "--dataset", f"prepared:{tmp_path / 'p'}", "--select", "random", "--ipc", "2", "--epochs", "1",
                 "--seeds", "1", "--arch", "convnet3", "--json", str(tmp_path / "eval.json")])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["dataset"]["name"] == f"prepared:{tmp_path / 'p'}"


class Killed(BaseException):
    """Stands for a kill -9 between two chunks."""


def test_a_killed_prepare_resumes_to_the_bytes_of_an_uninterrupted_one(jpegs, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    prepare("imagenet", straight, 16, jpegs, chunk=4, progress=False)
    decode, calls = prepared_module._decode_chunk, []

    def dying(*args):
        if len(calls) == 3:
            raise Killed
        calls.append(1)
        return decode(*args)

    killed = tmp_path / "killed"
    with monkeypatch.context() as patch:
        patch.setattr(prepared_module, "_decode_chunk", dying)
        with pytest.raises(Killed):
            prepare("imagenet", killed, 16, jpegs, chunk=4, progress=False)
    with pytest.raises(GencondError, match="has not finished"):
        load_dataset(f"prepared:{killed}")
    log = killed / "train" / "progress.jsonl"
    assert len(log.read_text().splitlines()) == 3
    # the kill also cut the log's last line short, and left a decoded chunk (rows 16-19) unlogged
    log.write_text(log.read_text() + '{"chunk": 7, "skip')
    pixels = np.load(killed / "train" / "pixels.npy", mmap_mode="r+")
    pixels[16:20] = 255
    pixels.flush()
    del pixels
    with pytest.raises(GencondError, match="unfinished prepare with other settings"):
        prepare("imagenet", killed, 16, jpegs, chunk=8, progress=False)
    prepare("imagenet", killed, 16, jpegs, chunk=4, progress=False)
    assert folder_bytes(killed) == folder_bytes(straight)
    assert not log.exists()


def write_hf(path: Path, grey: bool, parquet: bool, size: tuple[int, int] = (12, 12)) -> None:
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)

    def split(n):
        shape = size[::-1] if grey else (*size[::-1], 3)
        images = [Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)) for _ in range(n)]
        features = datasets.Features(image=datasets.Image(), label=datasets.ClassLabel(names=["ant", "bee", "cat"]))
        return datasets.Dataset.from_dict({"image": images, "label": [i % 3 for i in range(n)]}, features=features)

    splits = datasets.DatasetDict(train=split(9), validation=split(4))
    if parquet:
        (path / "data").mkdir(parents=True)
        for name, part in splits.items():
            part.to_parquet(str(path / "data" / f"{name}-00000-of-00001.parquet"))
    else:
        splits.save_to_disk(str(path))


@pytest.mark.parametrize("parquet", [False, True])
def test_a_hugging_face_dataset_is_prepared_with_its_classes_and_statistics(tmp_path, parquet):
    import datasets

    write_hf(tmp_path / "hf", grey=True, parquet=parquet)
    meta = prepare(f"hf:{tmp_path / 'hf'}", tmp_path / "p", progress=False)
    ready = load_dataset(f"prepared:{tmp_path / 'p'}")
    assert ready.info.class_names == ("ant", "bee", "cat") and ready.info.channels == 1
    assert (len(ready.train), len(ready.test)) == (9, 4) and meta["splits"]["test"]["skipped"] == 0
    source = datasets.load_from_disk(str(tmp_path / "hf")) if not parquet else None
    pixels = ready.train.pixels(torch.arange(9))
    if source is not None:
        expected = torch.stack([torch.as_tensor(np.array(image)) for image in source["train"]["image"]])
        assert torch.equal(pixels[:, 0], expected)
    assert ready.train.labels.tolist() == [i % 3 for i in range(9)]
    scaled = pixels.double() / 255
    assert ready.info.mean[0] == pytest.approx(scaled.mean().item(), abs=1e-9)
    assert ready.info.std[0] == pytest.approx(scaled.std().item(), abs=1e-9)


def test_a_parquet_dataset_with_test_and_validation_files_takes_the_test_split(tmp_path):
    write_hf(tmp_path / "hf", grey=True, parquet=True)
    (tmp_path / "hf" / "data" / "validation-00000-of-00001.parquet").rename(tmp_path / "hf" / "data" / "test-00000.parquet")
    write_hf(tmp_path / "other", grey=True, parquet=True)
    (tmp_path / "other" / "data" / "validation-00000-of-00001.parquet").rename(
        tmp_path / "hf" / "data" / "validation-00000-of-00001.parquet")
    prepare(f"hf:{tmp_path / 'hf'}", tmp_path / "p", progress=False)
    assert len(load_dataset(f"prepared:{tmp_path / 'p'}").test) == 4  # not 8: validation files are left out


def test_hugging_face_images_of_another_shape_are_resized_and_bad_layouts_refused(tmp_path, capsys):
    write_hf(tmp_path / "hf", grey=False, parquet=False, size=(20, 14))
    with pytest.raises(GencondError, match="not square: pass --image-size"):
        prepare(f"hf:{tmp_path / 'hf'}", tmp_path / "p", progress=False)
    prepare(f"hf:{tmp_path / 'hf'}", tmp_path / "p", image_size=10, progress=False)
    ready = load_dataset(f"prepared:{tmp_path / 'p'}")
    assert ready.train.pixels(torch.arange(2)).shape == (2, 3, 10, 10)
    capsys.readouterr()
    code = main(["prepare", f"hf:{tmp_path / 'missing'}", "--output", str(tmp_path / "q")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not a saved Hugging Face dataset" in err[0], err
    code = main(["train", "dim", "--dataset", f"prepared:{tmp_path / 'nothing'}", "--output-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no prepared dataset here" in err[0], err
    code = main(["train", "dim", "--dataset", f"prepared:{tmp_path / 'p'}", "--image-size", "32", "--output-dir",
                 str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "holds 10x10 images, not image_size 32" in err[0], err


def test_loader_workers_read_the_batches_in_order_from_where_an_epoch_resumes(jpegs):
    splits = load_dataset("imagenet", jpegs, image_size=16)
    batches = list(torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(1)).split(4))
    inline = list(read_batches(splits.train, batches, 2, torch.device("cpu")))
    workers = list(read_batches(splits.train, batches, 2, torch.device("cpu"), workers=2, prefetch=1))
    assert len(inline) == len(workers) == len(batches) - 2
    for (x, y), (xw, yw), idx in zip(inline, workers, batches[2:]):
        assert x.dtype == torch.uint8 and torch.equal(x, xw) and torch.equal(y, yw)
        assert torch.equal(y, splits.train.labels[idx])
        assert torch.equal(splits.info.normalize(x.float() / 255), splits.train.images(idx))


def test_cuda_settings_leave_a_cpu_alone_and_set_tf32_for_a_gpu():
    assert optimizer_options(torch.device("cpu"), True) == {} and optimizer_options(torch.device("cuda"), False) == {}
    assert optimizer_options(torch.device("cuda"), True) == {"fused": True}
    before = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    try:
        torch.set_float32_matmul_precision("highest")
        cuda_settings(torch.device("cpu"), tf32=True)
        assert torch.get_float32_matmul_precision() == "highest"
        cuda_settings(torch.device("cuda"), tf32=True)
        assert torch.get_float32_matmul_precision() == "high" and torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.conv.fp32_precision == "tf32"  # the newer API reads the same
        cuda_settings(torch.device("cuda"), tf32=False)
        assert torch.get_float32_matmul_precision() == "highest" and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]


@pytest.mark.slow
def test_gpu_settings_keep_a_cpu_run_and_channels_last_trains(tmp_path):
    """On a CPU, ``tf32`` and ``fused_optimizer`` change nothing (bitwise); ``channels_last``
    trains, exports contiguous weights and loads."""
    from dataclasses import replace

    from safetensors.torch import load_file

    from gencond.methods.diffusion import DiffusionConfig, train_diffusion
    from gencond.models.generators import load_generator

    assert (DiffusionConfig.tf32, DiffusionConfig.fused_optimizer, DiffusionConfig.channels_last) == (True, True, False)
    tiny = DiffusionConfig(dataset="digits", epochs=1, steps_per_epoch=2, batch_size=8, block_channels=[8, 16],
                           layers_per_block=1, attention_levels=[], sampling_steps=2, sample_every=0, seed=4)
    runs = {name: load_file(str(train_diffusion(replace(tiny, output_dir=str(tmp_path / name), **settings))
                                / "model.safetensors"))
            for name, settings in {"default": {}, "off": {"tf32": False, "fused_optimizer": False},
                                   "channels_last": {"channels_last": True}}.items()}
    assert all(torch.equal(runs["default"][k], runs["off"][k]) for k in runs["default"])
    assert all(t.is_contiguous() for t in runs["channels_last"].values())
    gen = load_generator(tmp_path / "channels_last" / "generator")
    assert torch.isfinite(gen.generate(torch.tensor([0, 1]), gen.latents(None, 2, torch.Generator()))).all()


@pytest.mark.slow
def test_the_dry_device_check_runs_every_part(tmp_path, capsys):
    code = main(["doctor", "--gpu", "--dry", "--workdir", str(tmp_path), "--json", str(tmp_path / "doctor.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    figures = json.loads((tmp_path / "doctor.json").read_text())
    assert set(figures["training"]) == {"dim", "codebook", "diffusion"}
    assert set(figures["training"]["dim"]["phases"]) == {"dim phase 1", "dim phase 2"}
    for result in figures["training"].values():
        assert result["sampling_images_per_s"] > 0
        for phase in result["phases"].values():
            assert phase["seconds_per_step"] > 0 and phase["tflop_per_step"] > 0
    assert figures["training"]["dim"]["phases"]["dim phase 1"]["images_read_per_step"] == 8  # one batch
    assert figures["data"]["prepared_images_per_s"]["0 workers"] > 0 and figures["evaluation"]["images_per_s"] > 0
    assert "dim phase 2" in out and "(cost study: 121,871)" in out
    code = main(["doctor", "--gpu", "--configs", str(tmp_path / "none")])
    assert code == 2
