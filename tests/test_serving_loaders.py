"""A fresh GeneratorDataset served through torch DataLoaders as users write them: new
images every epoch, exactly INPC images per class in each, the same images as a
single-process read for the same seed and epoch, whatever the workers, persistence,
shuffling or distributed split."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from gencond.errors import GencondError
from gencond.models import load_generator
from gencond.serve import GeneratorDataset

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "dim_digits"
INPC, BLOCK = 3, 8


@pytest.fixture(scope="module")
def generator():
    return load_generator(SHIPPED)


def reference_epoch(generator, epoch: int) -> torch.Tensor:
    """Every image of ``epoch``, read item by item in one process (DataLoader workers run
    one thread each: their convolutions agree to about 1e-6, not bitwise)."""
    dataset = GeneratorDataset(generator, INPC, seed=5, fresh=True, batch_size=BLOCK)
    return torch.stack([dataset[(epoch, i)][0] for i in range(len(dataset))])


def as_sorted(images: torch.Tensor) -> torch.Tensor:
    """The images in a canonical order, to compare two epochs as sets."""
    return images[images.flatten(1).sum(1).argsort()]


def read_epochs(loader: DataLoader, epochs: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [tuple(torch.cat(part) for part in zip(*loader)) for _ in range(epochs)]


LOADERS = [(workers, persistent, shuffle, via) for workers in (0, 2) for persistent in (False, True)
           for shuffle in (False, True) for via in ("plain", "sampler") if workers or not persistent]


@pytest.mark.parametrize(("workers", "persistent", "shuffle", "via"), LOADERS)
def test_each_epoch_is_new_complete_and_the_same_as_a_single_process_read(generator, workers, persistent, shuffle, via):
    def epochs():
        dataset = GeneratorDataset(generator, INPC, seed=5, fresh=True, batch_size=BLOCK)
        options = {"sampler": dataset.sampler(shuffle, seed=1)} if via == "sampler" else {"shuffle": shuffle}
        torch.manual_seed(0)
        loader = DataLoader(dataset, batch_size=7, num_workers=workers, persistent_workers=persistent, **options)
        return read_epochs(loader, 3)

    first = epochs()
    for epoch, (images, labels) in enumerate(first):
        assert torch.bincount(labels, minlength=10).tolist() == [INPC] * 10
        torch.testing.assert_close(as_sorted(images), as_sorted(reference_epoch(generator, epoch)), rtol=0, atol=1e-5)
    assert not torch.equal(as_sorted(first[0][0]), as_sorted(first[1][0]))
    for (a, la), (b, lb) in zip(first, epochs()):  # the same seeds give the same sequence
        assert torch.equal(a, b) and torch.equal(la, lb)


def test_set_epoch_reaches_persistent_workers(generator):
    dataset = GeneratorDataset(generator, INPC, seed=5, fresh=True, batch_size=BLOCK)
    loader = DataLoader(dataset, batch_size=7, num_workers=2, persistent_workers=True)
    read_epochs(loader, 2)
    assert dataset.epoch == 2
    dataset.set_epoch(7)
    (images, _), = read_epochs(loader, 1)
    torch.testing.assert_close(images, reference_epoch(generator, 7), rtol=0, atol=1e-5)


def test_the_sampler_splits_each_epoch_across_processes(generator):
    dataset = GeneratorDataset(generator, INPC, seed=5, fresh=True, batch_size=BLOCK)
    shards = [dataset.sampler(seed=3, num_replicas=2, rank=rank) for rank in (0, 1)]
    for epoch in range(2):
        indices = [list(shard) for shard in shards]
        assert {e for part in indices for e, _ in part} == {epoch}
        assert sorted(i for part in indices for _, i in part) == list(range(len(dataset)))
    assert len(shards[0]) == len(dataset) // 2


def _distributed_worker(rank: int, port: int, queue) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        dataset = GeneratorDataset(load_generator(SHIPPED), INPC, seed=5, fresh=True, batch_size=BLOCK)
        loader = DataLoader(dataset, batch_size=7, sampler=dataset.sampler(seed=3))
        epochs = read_epochs(loader, 2)
        try:
            dataset[0]
            refused = ""
        except GencondError as error:
            refused = str(error)
        # numpy arrays travel by value: a tensor would be shared through a file descriptor
        # that vanishes if this process exits before the parent reads it
        queue.put((rank, [images.numpy() for images, _ in epochs], [labels.numpy() for _, labels in epochs], refused))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="two gloo processes")
def test_distributed_sampler_with_two_processes(generator):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = torch.multiprocessing.get_context("spawn")
    queue = context.SimpleQueue()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    processes = [context.Process(target=_distributed_worker, args=(rank, port, queue)) for rank in (0, 1)]
    for p in processes:
        p.start()
    results = dict((r[0], r[1:]) for r in (queue.get() for _ in processes))
    for p in processes:
        p.join(60)
        assert p.exitcode == 0
    for epoch in range(2):
        images = torch.cat([torch.from_numpy(results[rank][0][epoch]) for rank in (0, 1)])
        labels = torch.cat([torch.from_numpy(results[rank][1][epoch]) for rank in (0, 1)])
        assert torch.bincount(labels, minlength=10).tolist() == [INPC] * 10
        torch.testing.assert_close(as_sorted(images), as_sorted(reference_epoch(generator, epoch)), rtol=0, atol=1e-5)
    assert "needs its own sampler" in results[0][2] and "needs its own sampler" in results[1][2]


@pytest.mark.parametrize("fresh", [True, False])
def test_a_shuffled_epoch_generates_each_image_once(generator, monkeypatch, fresh):
    """A DataLoader batch is generated in one pass (``__getitems__``): a shuffled read of
    200 images generates 200, not the blocks around every index it touches; a fixed set
    generates them once for every epoch, and serves what single-item reads give."""
    import gencond.serve.dataset as served

    original, generated = served.generate_in_batches, []

    def counting(gen, labels, *args, **kwargs):
        generated.append(len(labels))
        return original(gen, labels, *args, **kwargs)

    monkeypatch.setattr(served, "generate_in_batches", counting)
    dataset = GeneratorDataset(generator, 20, seed=5, fresh=fresh, batch_size=BLOCK)
    torch.manual_seed(0)
    (images, labels), (again, _) = read_epochs(DataLoader(dataset, batch_size=16, shuffle=True), 2)
    assert sum(generated) == len(dataset) * (2 if fresh else 1) and len(images) == len(dataset)
    assert torch.bincount(labels).tolist() == [20] * 10
    if not fresh:
        single = GeneratorDataset(generator, 20, seed=5, batch_size=BLOCK)
        by_item = torch.stack([single[i][0] for i in range(len(single))])
        torch.testing.assert_close(as_sorted(images), as_sorted(by_item))
        torch.testing.assert_close(as_sorted(again), as_sorted(by_item))


@pytest.mark.slow
def test_the_load_script_serves_a_single_process_read_with_four_workers(tmp_path):
    """experiments/serving_load/bench_serving_load.py at a tiny size: same images, memory read over the epoch."""
    import json
    import subprocess

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "load.json"
    from conftest import driver, driver_env

    subprocess.run([*driver("experiments.serving_load.bench_serving_load"), "--checkpoint", str(SHIPPED),
                    "--images", "2000", "--workers", "4", "--batch-size", "64", "--samples", "5", "--json", str(out)],
                   check=True, cwd=root, capture_output=True, env=driver_env())
    found = json.loads(out.read_text())
    assert found["same_images"] and found["images"] == 2000
    assert len(found["rss_mib"]) >= 5 and all(mib > 0 for _, mib in found["rss_mib"])
