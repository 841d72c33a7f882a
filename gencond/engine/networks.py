"""Training networks: from scratch on a (condensed) training set and testing it (the
evaluation protocol), or a few real batches at a time between updates of something else
(DiM's pool network, IDC's matching network, the codebook generator's feature network).

The defaults are the DC/DSA/DM evaluation setting: SGD with learning rate 0.01,
momentum 0.9, weight decay 5e-4, batch 256, learning rate x0.1 after half the epochs,
1000 epochs, DSA augmentation drawn per image. The reported figure is the test accuracy
at the end of training; no epoch or checkpoint is ever chosen by test accuracy.

Targets are class indices (cross-entropy) or a teacher's logits (soft labels: the KL
divergence from the teacher's softmax at temperature T to the network's, times T^2, as
in knowledge distillation). With a ``teacher`` network, :func:`train_network` labels
every augmented view anew (the relabel mode of SRe2L/RDED-style evaluation).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gencond.augment import DEFAULT_STRATEGY, DSA
from gencond.augment.policies import POLICIES, PolicyAugment
from gencond.data.base import DatasetInfo, ImageSet
from gencond.errors import GencondError
from gencond.models import create_network
from gencond.runtime import (
    autocast,
    check_precision,
    keep_freed_memory,
    resolve_precision,
)

SCHEDULES = ("step", "cosine")
AUGMENTATIONS = ("none", "dsa", *POLICIES)


@dataclass
class TrainConfig:
    """How an evaluation network is trained."""

    epochs: int = field(default=1000, metadata={"help": "training epochs (1000 is the paper setting)"})
    lr: float = field(default=0.01, metadata={"help": "SGD learning rate"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    weight_decay: float = field(default=5e-4, metadata={"help": "SGD weight decay"})
    schedule: str = field(default="step", metadata={"help": "step (x0.1 after half the epochs) or cosine"})
    batch_size: int = field(default=256, metadata={"help": "training batch"})
    augment: str = field(default="dsa", metadata={"help": "none, dsa (per-image differentiable augmentation), or "
                                                          "a DC-BENCH policy: imagenet, autoaugment, randaugment"})
    dsa_strategy: str = field(default=DEFAULT_STRATEGY, metadata={"help": "DSA operations, joined by _"})
    dsa_mode: str = field(default="dsa", metadata={"help": "dsa (one operation per batch) or idc (flip+color+cutout+one)"})
    cutmix_prob: float = field(default=0.0, metadata={"help": "probability of CutMix per batch (0 = off)"})
    cutmix_beta: float = field(default=1.0, metadata={"help": "Beta(beta, beta) of CutMix's box area"})
    temperature: float = field(default=1.0, metadata={"help": "soft-label temperature T of the KL loss (1: the "
                                                              "teacher's own distribution)"})
    channels_last: bool = field(default=False, metadata={"help": "channels-last memory format (GPU)"})
    mixed_precision: str = field(default="no", metadata={"help": "no, bf16, fp16 (autocast; fp16 with loss "
                                                                 "scaling) or auto: bf16 where the device runs it "
                                                                 "natively, no elsewhere"})
    renamed_keys: ClassVar[dict[str, str]] = {"bf16": "mixed_precision"}

    def check(self) -> None:
        check_precision("mixed_precision", self.mixed_precision)
        if self.epochs <= 0 or self.batch_size <= 0:
            raise GencondError("epochs and batch size must be positive")
        if self.schedule not in SCHEDULES:
            raise GencondError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.augment not in AUGMENTATIONS:
            raise GencondError(f"unknown augmentation {self.augment!r}; choose one of {', '.join(AUGMENTATIONS)}")
        if not 0.0 <= self.cutmix_prob <= 1.0:
            raise GencondError("cutmix probability must lie in [0, 1]")
        if self.temperature <= 0:
            raise GencondError(f"the soft-label temperature must be positive, got {self.temperature}")


class TrainingData(Protocol):
    """What the trainer consumes: batches of (images, targets) for one epoch.

    Targets are class indices (N,) or a teacher's logits (N, C).
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
    def from_condensed(cls, condensed, soft: bool = False) -> IndexedData:
        """A condensed set as a network trains on it: decoded (multi-formation), with its
        labels or (``soft``) its stored soft labels."""
        return cls.from_tensors(*condensed.decoded(soft))

    @classmethod
    def from_image_set(cls, images: ImageSet) -> IndexedData:
        return cls(len(images), images.batch)

    def epoch(self, batch_size: int, generator: torch.Generator):
        for idx in torch.randperm(self.size, generator=generator).split(batch_size):
            yield self.fetch(idx)


class TeacherLabelled:
    """Training data whose targets are a teacher's logits of each batch's (unaugmented)
    images: soft labels for data that stores none (real subsets, generator draws)."""

    def __init__(self, data: TrainingData, teacher: nn.Module):
        self.data, self.teacher = data, teacher

    def epoch(self, batch_size: int, generator: torch.Generator):
        for x, _ in self.data.epoch(batch_size, generator):
            yield x, teacher_logits(self.teacher, x)


@dataclass
class ReferenceNetwork:
    """A network trained on the real data that serving and evaluation consult (the
    selection network of candidate selection, the teacher of soft labels), with what it
    is, recorded in the metadata of what it helped make."""

    net: nn.Module
    description: dict = field(default_factory=dict)


def real_data_network(images: ImageSet, arch: str, epochs: int, device: torch.device, seed: int,
                      **network_kwargs) -> nn.Module:
    """``arch`` (with ``network_kwargs``, e.g. ``width``) initialised from ``seed`` and
    trained ``epochs`` (evaluation defaults) on the real ``images``; in eval mode on ``device``."""
    info = images.info
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = create_network(arch, info.num_classes, info.channels, info.image_size, **network_kwargs)
    if epochs:
        train_network(net, IndexedData.from_image_set(images), TrainConfig(epochs=epochs), device, seed, info=info)
    return net.to(device).eval()


@torch.no_grad()
def teacher_logits(teacher: nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The teacher's float32 logits of ``images`` (eval mode, on the images' device); the
    network is returned to its previous train/eval mode."""
    was_training = teacher.training
    teacher.eval()
    device = next(teacher.parameters()).device
    logits = torch.cat([teacher(x.to(device)).float().to(images.device) for x in images.split(batch_size)]) \
        if len(images) else torch.empty(0)
    teacher.train(was_training)
    return logits


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


def soft_label_loss(logits: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(logits / T)) * T^2, averaged over the batch
    (Hinton et al. 2015: the T^2 keeps gradient sizes comparable across temperatures)."""
    t = temperature
    return F.kl_div(F.log_softmax(logits.float() / t, 1), F.log_softmax(teacher.float() / t, 1),
                    reduction="batchmean", log_target=True) * t * t


def target_loss(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Cross-entropy for class indices, :func:`soft_label_loss` for a teacher's logits."""
    if targets.is_floating_point():
        return soft_label_loss(logits, targets, temperature)
    return F.cross_entropy(logits, targets)


def classification_loss(net: nn.Module, x: torch.Tensor, targets: torch.Tensor, cutmix_prob: float,
                        cutmix_beta: float, generator: torch.Generator, temperature: float = 1.0) -> torch.Tensor:
    """:func:`target_loss` (hard or soft targets); with probability ``cutmix_prob`` on a
    CutMix batch, weighting both target sets by their share of the image."""
    if cutmix_prob > 0 and float(torch.rand(1, generator=generator)) < cutmix_prob:
        x, t_a, t_b, lam = cutmix(x, targets, cutmix_beta, generator)
        logits = net(x)
        return lam * target_loss(logits, t_a, temperature) + (1 - lam) * target_loss(logits, t_b, temperature)
    return target_loss(net(x), targets, temperature)


@dataclass
class RealBatchConfig:
    """A network trained on random real batches, ``batches`` at a time between updates of
    something else: SGD, per-image augmentation, optional CutMix."""

    batches: int = field(default=16, metadata={"help": "real batches per update (DiM code: 16)"})
    batch_size: int = field(default=64, metadata={"help": "real images per batch"})
    lr: float = field(default=0.01, metadata={"help": "SGD learning rate"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    weight_decay: float = field(default=5e-4, metadata={"help": "SGD weight decay"})
    dsa_strategy: str = field(default="color_crop", metadata={"help": "per-image augmentation ('none' = off)"})
    cutmix_prob: float = field(default=0.0, metadata={"help": "probability of CutMix per batch"})
    cutmix_beta: float = field(default=1.0, metadata={"help": "Beta(beta, beta) of CutMix's box area"})

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
            x, y = self.images.images_on(idx, self.device), self.images.labels[idx].to(self.device)
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


def training_augment(cfg: TrainConfig, info: DatasetInfo | None, generator: torch.Generator):
    """The per-image augmentation ``cfg.augment`` names (None for 'none'); the policies
    work on pixels, so they need the dataset's normalization (``info``)."""
    if cfg.augment == "dsa":
        return DSA(cfg.dsa_strategy, cfg.dsa_mode, generator=generator)
    if cfg.augment in POLICIES:
        if info is None:
            raise GencondError(f"augmentation {cfg.augment!r} needs the dataset's normalization statistics")
        return PolicyAugment(cfg.augment, info.mean, info.std, info.image_size, generator)
    return None


def train_network(
    net: nn.Module,
    data: TrainingData,
    cfg: TrainConfig,
    device: torch.device,
    seed: int = 0,
    teacher: nn.Module | None = None,
    info: DatasetInfo | None = None,
    after_epoch: Callable[[int], None] | None = None,
) -> nn.Module:
    """Train ``net`` for ``cfg.epochs`` epochs on ``data``; every random choice (order,
    augmentation, CutMix) comes from one generator seeded with ``seed``. With a
    ``teacher``, each augmented view is trained on the teacher's logits of it (relabel).
    ``info`` (the data's normalization) is needed by the pixel-space policies only.
    ``after_epoch(epoch)`` (1-based) may look at the network; training goes on in train mode."""
    cfg.check()
    keep_freed_memory()
    generator = torch.Generator().manual_seed(seed)
    augment = training_augment(cfg, info, generator)
    precision = resolve_precision(cfg.mixed_precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    net = net.to(device, memory_format=memory_format)
    optimizer = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: _lr_factor(cfg, e))
    net.train()
    for epoch in range(cfg.epochs):
        for x, targets in data.epoch(cfg.batch_size, generator):
            x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            targets = targets.to(device, non_blocking=True)
            if augment is not None:
                x = augment(x)
            if teacher is not None:
                targets = teacher_logits(teacher, x)
            with autocast(precision, device):
                loss = classification_loss(net, x, targets, cfg.cutmix_prob, cfg.cutmix_beta, generator,
                                           cfg.temperature)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        scheduler.step()
        if after_epoch is not None:
            after_epoch(epoch + 1)
            net.train()
    return net


@torch.no_grad()
def test_accuracy(net: nn.Module, test: ImageSet, device: torch.device, batch_size: int = 1000,
                  mixed_precision: str = "no") -> float:
    """Top-1 accuracy (%) on a whole test split (forward under ``mixed_precision``'s autocast)."""
    net.eval()
    correct = 0
    precision = resolve_precision(mixed_precision, device)
    for idx in torch.arange(len(test)).split(batch_size):
        x, y = test.batch(idx)
        with autocast(precision, device):
            pred = net(x.to(device)).argmax(1)
        correct += int((pred.cpu() == y).sum())
    return 100.0 * correct / len(test)


class Evaluated(NamedTuple):
    """One evaluation network's outcome."""

    accuracy: float  # final test accuracy (%)
    seconds: float  # training seconds, the tests during training excluded
    best: float | None = None  # the best test accuracy over the epochs tested (``best_every``), else None


def train_and_test(make_net: Callable[[], nn.Module], data: TrainingData, test: ImageSet, cfg: TrainConfig,
                   device: torch.device, seed: int, teacher: nn.Module | None = None, best_every: int = 0
                   ) -> Evaluated:
    """Train one freshly initialised network and test it at the end (``teacher``: relabel
    every augmented view, see :func:`train_network`). With ``best_every`` it is also tested
    every that many epochs, and ``best`` is the highest accuracy seen, the final included:
    DC-BENCH's and DD-Ranking's figure, chosen on the test split, so only ever a labelled
    extra. Testing changes neither the training nor the final accuracy."""
    torch.manual_seed(seed)
    net = make_net()
    tested, test_seconds = [], 0.0

    def test_now(epoch: int) -> None:
        nonlocal test_seconds
        if epoch % best_every == 0 and epoch < cfg.epochs:
            begun = time.perf_counter()
            tested.append(test_accuracy(net, test, device, mixed_precision=cfg.mixed_precision))
            test_seconds += time.perf_counter() - begun

    start = time.perf_counter()
    train_network(net, data, cfg, device, seed, teacher, test.info, test_now if best_every else None)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start - test_seconds
    final = test_accuracy(net, test, device, mixed_precision=cfg.mixed_precision)
    return Evaluated(final, seconds, max(tested + [final]) if best_every else None)
