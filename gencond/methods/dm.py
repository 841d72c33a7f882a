"""DM: dataset condensation with distribution matching (Zhao & Bilen, WACV 2023), Algorithm 1.

Every iteration draws a freshly initialised network ``psi`` (not trained, no gradient to
its weights), one siamese DSA draw per class, and updates the synthetic images with one
SGD step on

    L = sum_c || mean_{x in real_c} psi(A_c(x)) - mean_{s in syn_c} psi(A_c(s)) ||^2

where ``psi`` is the embedding before the linear head (2048-d for ConvNet-3) and the
squared L2 norm sums over feature dimensions. Real batch 256 per class, SGD lr 1 with
momentum 0.5, 20,000 iterations, initialised from random real images (paper and code).

The official code loops over classes; here the classes share every call: one augmentation
call draws per class, the real images go through the network under ``no_grad`` (they
carry no gradient) in cache-sized chunks, the synthetic images in one batch, and the
class means come from one scatter. With an instance-norm network this is exactly the
per-class computation; with a batch-norm network (``net: convnet3_bn``) it is the paper's
BN variant (Table 2), whose code concatenates the classes the same way so the statistics
come from the whole real batch and the whole synthetic batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from gencond.artifacts import CondensedSet
from gencond.augment import DEFAULT_STRATEGY
from gencond.data import DatasetSplits
from gencond.engine.networks import resolve_device
from gencond.losses.matching import class_means
from gencond.methods._registry import register_method
from gencond.methods.pixel import ImageTrainer, PixelConfig, run_iterations
from gencond.models import embed, has_batch_norm
from gencond.runtime import (
    autocast,
    check_precision,
    keep_freed_memory,
    resolve_precision,
    slow_precision_warning,
)


@dataclass
class DMConfig(PixelConfig):
    """DM defaults (paper and official code)."""

    iterations: int = field(default=20000, metadata={"help": "image updates (paper: 20,000; 10,000 for TinyImageNet)"})
    lr_img: float = field(default=1.0, metadata={"help": "SGD lr of the images (paper: 1; 10 for IPC >= 100)"})
    dsa_strategy: str = field(default=DEFAULT_STRATEGY, metadata={"help": "siamese augmentation, one draw per class "
                                                                          "(the DSA README drops flip for digits)"})
    embed_chunk: int = field(default=256, metadata={"help": "real images per forward (0 = all; batch-norm nets: all)"})
    mixed_precision: str = field(default="no", metadata={
        "help": "the real images' forward (no gradients; most of an iteration): no: fp32 (the paper); auto: under "
                "bf16 autocast where the device runs bf16 natively (a GPU, a CPU with AVX-512 BF16 or AMX), fp32 "
                "elsewhere (the CPU-sized configs); bf16, fp16: always. The synthetic side stays fp32"})
    renamed_keys: ClassVar[dict[str, str]] = {"real_mixed_precision": "mixed_precision"}

    def check(self) -> None:
        super().check()
        check_precision("mixed_precision", self.mixed_precision)


def real_embeddings(net: torch.nn.Module, images: torch.Tensor, chunk: int, precision: str = "no") -> torch.Tensor:
    """Embeddings of the real batch (fp32), without gradients, ``chunk`` images per forward:
    one chunk's activations stay in cache, which made the 2,560-image forward of an MNIST
    iteration 3x faster on CPU. A batch-norm network takes the whole batch at once, so
    its statistics are those of all classes together, as in DM's BN variant. With
    ``precision`` bf16 (or fp16) the forward runs under autocast: only class means of these
    embeddings are used, and averaging 256 images per class shrinks the rounding."""
    if has_batch_norm(net) or chunk <= 0:
        chunk = len(images)
    with torch.no_grad(), autocast(precision, images.device):
        features = torch.cat([embed(net, part) for part in images.split(chunk)])
    return features if precision == "no" else features.float()


def distribution_matching_loss(real_features: torch.Tensor, real_labels: torch.Tensor, syn_features: torch.Tensor,
                               syn_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Sum over classes of the squared L2 distance between the mean real and the mean
    synthetic embedding (classes absent from either batch contribute nothing)."""
    real_means, real_present = class_means(real_features, real_labels, num_classes)
    syn_means, syn_present = class_means(syn_features, syn_labels, num_classes)
    present = real_present & syn_present
    return ((real_means - syn_means)[present] ** 2).sum()


def real_forward_precision(cfg: DMConfig, device: torch.device) -> str:
    """The precision the real images' forward runs in: ``mixed_precision`` resolved for
    ``device`` (``auto`` is bf16 only where the device runs it natively)."""
    return resolve_precision(cfg.mixed_precision, device)


def dm_iteration(trainer: ImageTrainer, real_precision: str = "no") -> float:
    """One image update of Algorithm 1, all classes at once (``real_precision``: the real
    forward's autocast, ``no`` for fp32)."""
    info = trainer.info
    net = trainer.fresh_network().train().requires_grad_(False)
    real, real_labels = trainer.real_batch()
    draw = trainer.augment.draw_groups(info.num_classes, info.image_size, trainer.device)
    with torch.no_grad():
        real = draw(real, real_labels)
    real_features = real_embeddings(net, real, trainer.cfg.embed_chunk, real_precision)
    syn_features = embed(net, draw(trainer.images, trainer.labels))
    loss = distribution_matching_loss(real_features, real_labels, syn_features, trainer.labels, info.num_classes)
    trainer.step(loss)
    return float(loss.detach()) / info.num_classes


@register_method("dm", kind="pixel", config=DMConfig)
def distribution_matching(cfg: DMConfig, splits: DatasetSplits, log=print) -> CondensedSet:
    """DM: match mean embeddings of random networks, per class (Zhao & Bilen 2023)."""
    cfg.check()
    keep_freed_memory()
    device = resolve_device(cfg.device)
    warning = slow_precision_warning(cfg.mixed_precision, device)
    if warning:
        log(warning)
    trainer, precision = ImageTrainer(cfg, splits.train, device), real_forward_precision(cfg, device)
    losses = run_iterations(cfg, "dm", lambda i: dm_iteration(trainer, precision), log)
    return trainer.result("dm", {"final_loss": losses[-1], "real_forward": "fp32" if precision == "no" else precision})
