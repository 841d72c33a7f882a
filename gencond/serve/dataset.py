"""``GeneratorDataset``: a generator served as a torch Dataset of INPC x C images, fixed or
fresh every epoch, in any DataLoader set-up; ``EpochSampler`` for exact epochs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler, Sampler, get_worker_info

from gencond.engine.candidates import Selector, check_candidates
from gencond.engine.networks import teacher_logits
from gencond.engine.parallel import world_size
from gencond.engine.sampling import (
    Teacher,
    check_inpc,
    class_list,
    generate_in_batches,
    sample_set,
    set_latents,
)
from gencond.errors import GencondError
from gencond.models.generators import ConditionalGenerator

# Slots of the shared served-item counters: set_epoch's base, the main process and up to 254 DataLoader workers.
_COUNTER_SLOTS = 256


class EpochSampler(Sampler):
    """A sampler for a fresh :class:`GeneratorDataset` whose indices carry their epoch:
    it yields ``(epoch, i)`` pairs, so every DataLoader worker, persistent or not, and
    every process of a distributed run draws the images of the epoch the sampler is in.
    The epoch advances by one with each pass (or is set with :meth:`set_epoch`). The order
    and the split across ``num_replicas`` processes are those of torch's
    ``DistributedSampler`` (one process by default, or the world of an initialised
    ``torch.distributed``), seeded by ``seed`` and the epoch."""

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0, num_replicas: int | None = None,
                 rank: int | None = None, drop_last: bool = False):
        if num_replicas is None:
            num_replicas = world_size()
        if rank is None:
            rank = dist.get_rank() if num_replicas > 1 else 0
        self.order = DistributedSampler(range(size), num_replicas, rank, shuffle, seed, drop_last)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self):
        epoch = self.epoch
        self.order.set_epoch(epoch)
        self.epoch += 1
        return ((epoch, i) for i in list(self.order))


class GeneratorDataset(Dataset):
    """INPC x C (image, label) pairs drawn from a generator, lazily, in batches.

    Item ``i`` is an image of class ``classes[i // inpc]``. With ``fresh=False`` the
    images are fixed by ``seed`` (a condensed set you never had to store). With
    ``fresh=True`` every epoch draws new latents, and an image depends only on the seed,
    the epoch and its index, never on which process or worker draws it:

    - in any single-process DataLoader set-up (0 or more workers, persistent or not,
      shuffled or not), the epoch advances by itself once every item of the current epoch
      has been read: the items served are counted in shared memory, so workers that hold
      copies of the dataset still agree (read whole epochs; :meth:`set_epoch` resets);
    - for exact epochs under any sampling, and in distributed runs (where each process
      reads only its share), use :meth:`sampler`: its indices carry their epoch. Plain
      indices in a distributed run are refused rather than served from a wrong epoch.

    A DataLoader batch is generated in one pass whatever its indices (``__getitems__``),
    so shuffled reads cost what sequential ones do. A fresh dataset accumulates nothing
    over an epoch (a process holds the epoch's latents and, for single-item reads, one
    block of images); a fixed one keeps each image once generated, so memory grows to the
    set's size, as a pixel set's would, and no image is generated twice in a process.

    ``candidates``, ``rule`` and ``selector`` choose a fixed set among more draws, as
    :func:`sample_set` does (the chosen set is generated once, up front). With a
    ``teacher``, items are (image, label, soft label): the teacher's logits of the image.
    """

    def __init__(self, generator: ConditionalGenerator, inpc: int, seed: int = 0, fresh: bool = False,
                 classes: Sequence[int] | None = None, batch_size: int = 256, candidates: int = 1,
                 rule: str = "herding", selector: Selector | None = None, teacher: Teacher | None = None):
        check_inpc(inpc)
        if batch_size <= 0:
            raise GencondError(f"batch size must be positive, got {batch_size}")
        check_candidates(candidates, rule, selector)
        if candidates > 1 and fresh:
            raise GencondError("candidate selection serves fixed sets; fresh=True draws new images every epoch")
        self.generator, self.inpc, self.seed, self.fresh, self.teacher = generator, inpc, seed, fresh, teacher
        self.classes = class_list(generator, classes)
        self.labels = self.classes.repeat_interleave(inpc)
        self.batch_size = batch_size
        # served[0] holds set_epoch's base count, served[1] the items the main process read, served[2 + w] worker w's
        self._served = torch.zeros(_COUNTER_SLOTS, dtype=torch.int64).share_memory_()
        self._distributed = world_size() > 1
        self._latents_epoch, self._latents = None, None
        self._last_block: tuple = (None, None, None, None)  # (epoch, block, images, soft labels)
        self._kept: list[torch.Tensor | None] = []  # a fixed set's images and soft labels, filled as generated
        self._have = torch.zeros(len(self.labels), dtype=torch.bool)
        if candidates > 1:
            kept = sample_set(generator, inpc, seed, classes, batch_size, candidates, rule, selector).images
            self._keep(torch.arange(len(kept)), *self._with_soft_labels(kept))

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def epoch(self) -> int:
        """The epoch the next plain index is served from."""
        return int(self._served.sum()) // len(self)

    def set_epoch(self, epoch: int) -> None:
        """Serve plain indices from ``epoch`` on (seen by DataLoader workers too)."""
        self._served.zero_()
        self._served[0] = epoch * len(self)

    def sampler(self, shuffle: bool = True, seed: int = 0, num_replicas: int | None = None, rank: int | None = None,
                drop_last: bool = False) -> EpochSampler:
        """An :class:`EpochSampler` over this dataset: ``DataLoader(ds, sampler=ds.sampler())``."""
        return EpochSampler(len(self), shuffle, seed, num_replicas, rank, drop_last)

    def _epoch_latents(self, epoch: int) -> torch.Tensor:
        """Latents of every item of ``epoch`` (fixed: epoch 0 always, at the items' slots;
        fresh: new draws), so an image depends on its index, seed and epoch only, not on
        the block size or the process."""
        return set_latents(self.generator, self.classes, self.inpc, self.seed + 1_000_003 * epoch, self.fresh)

    def _with_soft_labels(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return images, (teacher_logits(self.teacher.net, images) if self.teacher is not None else None)

    def _generate(self, epoch: int, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images (and soft labels) of ``items`` of ``epoch``, generated together."""
        if epoch != self._latents_epoch:
            self._latents_epoch, self._latents = epoch, self._epoch_latents(epoch)
        images = generate_in_batches(self.generator, self.labels[items], self._latents[items], self.batch_size)
        return self._with_soft_labels(images)

    def _keep(self, items: torch.Tensor, images: torch.Tensor, soft: torch.Tensor | None) -> None:
        if not self._kept:
            self._kept = [images.new_empty(len(self), *images.shape[1:]),
                          None if soft is None else soft.new_empty(len(self), *soft.shape[1:])]
        self._kept[0][items] = images
        if soft is not None:
            self._kept[1][items] = soft
        self._have[items] = True

    def _images(self, epoch: int, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images (and soft labels) of ``items``: a fresh epoch's generated now, a fixed
        set's generated when first read and kept."""
        if self.fresh:
            return self._generate(epoch, items)
        missing = items[~self._have[items]].unique()
        if len(missing):
            self._keep(missing, *self._generate(0, missing))
        images, soft = self._kept
        return images[items], None if soft is None else soft[items]

    def _block(self, epoch: int, b: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Block ``b`` (``batch_size`` items) of ``epoch``: single-item reads generate a
        block at a time and keep only the last one."""
        if self._last_block[:2] != (epoch, b):
            items = torch.arange(b * self.batch_size, min((b + 1) * self.batch_size, len(self)))
            self._last_block = (epoch, b, *self._images(epoch, items))
        return self._last_block[2:]

    def _item_index(self, i: int) -> int:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return i % len(self)

    def _item(self, image: torch.Tensor, i: int, soft: torch.Tensor | None) -> tuple:
        return (image, int(self.labels[i])) if soft is None else (image, int(self.labels[i]), soft)

    def _plain_index_epoch(self) -> tuple[int, int]:
        """The epoch of a plain index and the counter slot of the reading process."""
        if self._distributed:
            raise GencondError("a fresh GeneratorDataset in a distributed run needs its own sampler: "
                               "DataLoader(dataset, sampler=dataset.sampler()), so every process draws the same epoch")
        worker = get_worker_info()
        slot = 2 + worker.id if worker is not None else 1
        if slot >= _COUNTER_SLOTS:
            raise GencondError(f"a fresh GeneratorDataset serves at most {_COUNTER_SLOTS - 2} DataLoader workers")
        return self.epoch, slot

    def __getitem__(self, index) -> tuple[torch.Tensor, int] | tuple[torch.Tensor, int, torch.Tensor]:
        epoch, i = index if isinstance(index, tuple) else (None, index)
        i = self._item_index(i)
        slot = None
        if not self.fresh:
            epoch = 0
        elif epoch is None:
            epoch, slot = self._plain_index_epoch()
        images, soft_labels = self._block(epoch, i // self.batch_size)
        if slot is not None:
            self._served[slot] += 1  # each process writes only its own slot: no lock needed
        return self._item(images[i % self.batch_size], i, None if soft_labels is None else soft_labels[i % self.batch_size])

    def __getitems__(self, indices: list) -> list[tuple]:
        """The items of a DataLoader batch (torch's fetcher passes the batch's indices),
        generated in one pass per epoch they belong to; plain indices take the epochs that
        reading them one by one would."""
        pairs = [index if isinstance(index, tuple) else (None, index) for index in indices]
        items = torch.tensor([self._item_index(i) for _, i in pairs], dtype=torch.long)
        epochs, slot = [0 if not self.fresh else e for e, _ in pairs], None
        plain = [k for k, e in enumerate(epochs) if e is None]
        if plain:
            _, slot = self._plain_index_epoch()
            base = int(self._served.sum())
            for j, k in enumerate(plain):
                epochs[k] = (base + j) // len(self)
        epochs = torch.tensor(epochs, dtype=torch.long)
        out: list[tuple] = [()] * len(items)
        for epoch in epochs.unique().tolist():
            where = (epochs == epoch).nonzero().flatten()
            images, soft_labels = self._images(epoch, items[where])
            for j, k in enumerate(where.tolist()):
                out[k] = self._item(images[j], int(items[k]), None if soft_labels is None else soft_labels[j])
        if slot is not None:
            self._served[slot] += len(plain)
        return out
