"""Training networks: from scratch on a (condensed) training set and testing it (the
evaluation protocol), or a few real batches at a time between updates of something else
(DiM's pool network, IDC's matching network, the codebook generator's feature network).

The defaults are the DC/DSA/DM evaluation setting: SGD with learning rate 0.01,
momentum 0.9, weight decay 5e-4, batch 256, learning rate x0.1 after half the epochs,
1000 epochs, DSA augmentation drawn per image. The reported figure is the test accuracy
at the end of training; no epoch or checkpoint is ever chosen by test accuracy.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gencond.augment import DEFAULT_STRATEGY, DSA
from gencond.data.base import ImageSet
from gencond.errors import GencondError
from gencond.runtime import keep_freed_memory

SCHEDULES = ("step", "cosine")
AUGMENTATIONS = ("none", "dsa")


@dataclass
class TrainConfig:
    """How an evaluation network is trained."""

    epochs: int = field(default=1000, metadata={"help": "training epochs (1000 is the paper setting)"})
    lr: float = field(default=0.01, metadata={"help": "SGD learning rate"})
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = field(default="step", metadata={"help": "step (x0.1 after half the epochs) or cosine"})
    batch_size: int = 256
    augment: str = field(default="dsa", metadata={"help": "none or dsa (per-image differentiable augmentation)"})
    dsa_strategy: str = DEFAULT_STRATEGY
    dsa_mode: str = field(default="dsa", metadata={"help": "dsa (one operation per batch) or idc (flip+color+cutout+one)"})
    cutmix_prob: float = field(default=0.0, metadata={"help": "probability of CutMix per batch (0 = off)"})
    cutmix_beta: float = 1.0
    channels_last: bool = field(default=False, metadata={"help": "channels-last memory format (GPU)"})
    bf16: bool = field(default=False, metadata={"help": "bfloat16 autocast (GPU)"})

    def check(self) -> None:
        if self.epochs <= 0 or self.batch_size <= 0:
            raise GencondError("epochs and batch size must be positive")
        if self.schedule not in SCHEDULES:
            raise GencondError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.augment not in AUGMENTATIONS:
            raise GencondError(f"unknown augmentation {self.augment!r}; choose one of {', '.join(AUGMENTATIONS)}")
        if not 0.0 <= self.cutmix_prob <= 1.0:
            raise GencondError("cutmix probability must lie in [0, 1]")


class TrainingData(Protocol):
    """What the trainer consumes: batches of (images, targets) for one epoch.

    Targets are class indices (N,) or class probabilities (N, C).
    """

    def epoch(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


class IndexedData:
    """A fixed training set addressed by index, shuffled every epoch."""

    def __init__(self, size: int, fetch: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]):
        self.size, self.fetch = size, fetch

    @classmethod
    def from_tensors(cls, images: torch.Tensor, targets: torch.Tensor) -> IndexedData:
        return cls(len(images), lambda idx: (images[idx], targets[idx]))

    @classmethod
    def from_condensed(cls, condensed) -> IndexedData:
        """A condensed set as a network trains on it: decoded (multi-formation) and with its
        soft labels when it has them."""
        return cls.from_tensors(*condensed.decoded())

    @classmethod
    def from_image_set(cls, images: ImageSet) -> IndexedData:
        return cls(len(images), images.batch)

    def epoch(self, batch_size: int, generator: torch.Generator):
        for idx in torch.randperm(self.size, generator=generator).split(batch_size):
            yield self.fetch(idx)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise GencondError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GencondError("device cuda was asked for but no CUDA GPU is available")
    return device


def cutmix(x: torch.Tensor, targets: torch.Tensor, beta: float, generator: torch.Generator):
    """CutMix (Yun et al. 2019): paste a random box from a shuffled copy of the batch.

    Returns the mixed images, both target sets and the share ``lam`` of the original
    image left after pasting (the weight of the original targets).
    """
    n, _, h, w = x.shape
    lam = np.random.default_rng(int(torch.randint(1 << 31, (1,), generator=generator))).beta(beta, beta)
    perm = torch.randperm(n, generator=generator).to(x.device)
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy = int(torch.randint(h, (1,), generator=generator))
    cx = int(torch.randint(w, (1,), generator=generator))
    top, bottom = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    left, right = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    mixed = x.clone()
    mixed[:, :, top:bottom, left:right] = x[perm, :, top:bottom, left:right]
    lam = 1.0 - (bottom - top) * (right - left) / (h * w)
    return mixed, targets, targets[perm], lam


def classification_loss(net: nn.Module, x: torch.Tensor, targets: torch.Tensor, cutmix_prob: float,
                        cutmix_beta: float, generator: torch.Generator) -> torch.Tensor:
    """Cross-entropy (hard or soft targets); with probability ``cutmix_prob`` on a CutMix
    batch, weighting both target sets by their share of the image."""
    if cutmix_prob > 0 and float(torch.rand(1, generator=generator)) < cutmix_prob:
        x, t_a, t_b, lam = cutmix(x, targets, cutmix_beta, generator)
        logits = net(x)
        return lam * F.cross_entropy(logits, t_a) + (1 - lam) * F.cross_entropy(logits, t_b)
    return F.cross_entropy(net(x), targets)


@dataclass
class RealBatchConfig:
    """A network trained on random real batches, ``batches`` at a time between updates of
    something else: SGD, per-image augmentation, optional CutMix."""

    batches: int = field(default=16, metadata={"help": "real batches per update (DiM code: 16)"})
    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    dsa_strategy: str = field(default="color_crop", metadata={"help": "per-image augmentation ('none' = off)"})
    cutmix_prob: float = field(default=0.0, metadata={"help": "probability of CutMix per batch"})
    cutmix_beta: float = 1.0

    def check(self, dsa_mode: str) -> None:
        if self.batches < 0 or self.batch_size <= 0:
            raise GencondError(f"real-batch training needs batches >= 0 and batch_size > 0, got {self.batches}, {self.batch_size}")
        if not 0.0 <= self.cutmix_prob <= 1.0:
            raise GencondError("cutmix probability must lie in [0, 1]")
        DSA(self.dsa_strategy, dsa_mode)


class RealBatchTrainer:
    """A network that keeps training on random real batches a few steps at a time (see
    :class:`RealBatchConfig`)."""

    def __init__(self, net: nn.Module, images: ImageSet, cfg: RealBatchConfig, dsa_mode: str,
                 generator: torch.Generator, device: torch.device, autocast=contextlib.nullcontext):
        self.net, self.images, self.cfg = net, images, cfg
        self.optimizer = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        self.augment = DSA(cfg.dsa_strategy, dsa_mode, generator=generator)
        self.generator, self.device, self.autocast = generator, device, autocast

    def update(self) -> None:
        """One update: ``cfg.batches`` real batches."""
        self.steps(self.cfg.batches)

    def set_lr_factor(self, factor: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.lr * factor

    def steps(self, n: int) -> None:
        cfg = self.cfg
        self.net.train().requires_grad_(True)
        for _ in range(n):
            idx = torch.randint(len(self.images), (cfg.batch_size,), generator=self.generator)
            x, y = self.images.batch(idx)
            x, y = x.to(self.device), y.to(self.device)
            x = self.augment(x)
            with self.autocast():
                loss = classification_loss(self.net, x, y, cfg.cutmix_prob, cfg.cutmix_beta, self.generator)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()


def _lr_factor(cfg: TrainConfig, epoch: int) -> float:
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.epochs))
    return 0.1 if epoch >= cfg.epochs // 2 else 1.0


def train_network(
    net: nn.Module,
    data: TrainingData,
    cfg: TrainConfig,
    device: torch.device,
    seed: int = 0,
) -> nn.Module:
    """Train ``net`` for ``cfg.epochs`` epochs on ``data``; every random choice (order,
    augmentation, CutMix) comes from one generator seeded with ``seed``."""
    cfg.check()
    keep_freed_memory()
    generator = torch.Generator().manual_seed(seed)
    augment = DSA(cfg.dsa_strategy, cfg.dsa_mode, generator=generator) if cfg.augment == "dsa" else None
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    net = net.to(device, memory_format=memory_format)
    optimizer = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: _lr_factor(cfg, e))
    net.train()
    for _ in range(cfg.epochs):
        for x, targets in data.epoch(cfg.batch_size, generator):
            x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            targets = targets.to(device, non_blocking=True)
            if augment is not None:
                x = augment(x)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                loss = classification_loss(net, x, targets, cfg.cutmix_prob, cfg.cutmix_beta, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
    return net


@torch.no_grad()
def test_accuracy(net: nn.Module, test: ImageSet, device: torch.device, batch_size: int = 1000, bf16: bool = False) -> float:
    """Top-1 accuracy (%) on a whole test split."""
    net.eval()
    correct = 0
    for idx in torch.arange(len(test)).split(batch_size):
        x, y = test.batch(idx)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            pred = net(x.to(device)).argmax(1)
        correct += int((pred.cpu() == y).sum())
    return 100.0 * correct / len(test)


def train_and_test(make_net: Callable[[], nn.Module], data: TrainingData, test: ImageSet, cfg: TrainConfig,
                   device: torch.device, seed: int) -> tuple[float, float]:
    """(final test accuracy %, training seconds) for one freshly initialised network."""
    torch.manual_seed(seed)
    net = make_net()
    start = time.perf_counter()
    train_network(net, data, cfg, device, seed)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return test_accuracy(net, test, device, bf16=cfg.bf16), seconds
