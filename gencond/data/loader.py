"""Real batches read ahead by DataLoader worker processes.

A method whose epoch is a list of index batches (:func:`gencond.training.trainer.epoch_batches`:
DiM, the diffusion model) has every batch's indices before the epoch starts, so workers can
read batch k + 1, k + 2, ... while the step on batch k runs. The order is the list's, from
``start`` on, so an epoch resumed mid-way reads exactly the batches it has left. Workers hand
over uint8 pixels (a quarter of float's bytes), pinned when the device is a GPU and copied
with ``non_blocking``; the caller normalizes them on the device.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from gencond.data.base import ImageSet, LazyImageSet


class _Batches(Dataset):
    """Item k: the pixels and labels of ``batches[k]``."""

    def __init__(self, images: ImageSet, batches: Sequence[torch.Tensor]):
        self.images, self.batches = images, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images.pixels(self.batches[k]), self.images.labels[self.batches[k]]


def _one_decoding_thread(_: int) -> None:
    """In a worker process the processes are the parallelism: a lazy set decodes on one
    thread there (its own thread pool would oversubscribe the cores)."""
    base = torch.utils.data.get_worker_info().dataset.images
    while hasattr(base, "base"):
        base = base.base
    if isinstance(base, LazyImageSet):
        base.workers = 1


def read_batches(images: ImageSet, batches: Sequence[torch.Tensor], start: int, device: torch.device,
                 workers: int = 0, prefetch: int = 2) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 pixels, labels) on ``device`` for ``batches[start:]``, in order: read in this
    process when ``workers`` is 0, else by ``workers`` forked processes ``prefetch``
    batches ahead each."""
    dataset, order = _Batches(images, batches), range(start, len(batches))
    if workers == 0:
        for k in order:
            pixels, labels = dataset[k]
            yield pixels.to(device), labels.to(device)
        return
    context = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    loader = DataLoader(dataset, batch_size=None, sampler=order, num_workers=workers, prefetch_factor=prefetch,
                        pin_memory=device.type == "cuda", worker_init_fn=_one_decoding_thread,
                        multiprocessing_context=context, generator=torch.Generator().manual_seed(0))
    # (its own generator: the workers' seeds would otherwise be drawn from the global stream, one
    # draw more in a resumed run than in an uninterrupted one)
    for pixels, labels in loader:
        yield pixels.to(device, non_blocking=True), labels.to(device, non_blocking=True)
