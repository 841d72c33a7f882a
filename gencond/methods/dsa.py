"""DC and DSA: dataset condensation by gradient matching (Zhao, Mopuri & Bilen, ICLR 2021;
Zhao & Bilen, ICML 2021).

Every iteration draws a freshly initialised network and alternates ``outer_loop`` times:

1. for every class c, the gradient of the classification loss w.r.t. the network's
   weights on ``batch_real`` real images of c and on the ``ipc`` synthetic images of c;
   the loss is the layer-wise distance (1 - cosine per output unit, 1-D parameters
   skipped), summed over layers and classes; one SGD step on the images;
2. unless it was the last outer step, ``inner_loop`` epochs of training the network on
   the (detached) synthetic set with plain SGD (lr 0.01).

DSA applies one augmentation draw per class to the real and the synthetic batch before
taking gradients (siamese), and per-image augmentation while training the network on
the synthetic set; DC does neither. The loop counts follow the code's ``get_loops``.

Networks with batch norm get the code's treatment: one forward of 16 real images per
class in train mode, then batch norm in eval mode for the matching. The real and
synthetic batches of all classes are augmented in one call (one draw per class).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from gencond.artifacts import CondensedSet
from gencond.augment import DEFAULT_STRATEGY
from gencond.data import DatasetSplits
from gencond.engine.networks import resolve_device
from gencond.losses.matching import layerwise_distance
from gencond.methods._registry import register_method
from gencond.methods.pixel import ImageTrainer, PixelConfig, run_iterations
from gencond.models import has_batch_norm
from gencond.runtime import keep_freed_memory

# (outer_loop, inner_loop) per IPC, from the official code's get_loops.
OFFICIAL_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
BN_IMAGES_PER_CLASS = 16


def default_loops(ipc: int) -> tuple[int, int]:
    """The official loops; above IPC 50, DC-BENCH's (10, 10); otherwise the nearest IPC's."""
    if ipc in OFFICIAL_LOOPS:
        return OFFICIAL_LOOPS[ipc]
    if ipc > 50:
        return 10, 10
    return OFFICIAL_LOOPS[min(OFFICIAL_LOOPS, key=lambda k: (abs(k - ipc), k))]


@dataclass
class GradientMatchingConfig(PixelConfig):
    """DSA defaults (official code); ``gencond condense dc`` turns augmentation off."""

    iterations: int = field(default=1000, metadata={"help": "outer iterations, a fresh network each"})
    lr_img: float = field(default=0.1, metadata={"help": "SGD lr of the images (0.01 for an MLP)"})
    lr_net: float = field(default=0.01, metadata={"help": "SGD lr of the network on the synthetic set"})
    batch_train: int = field(default=256, metadata={"help": "batch of the network's training on the synthetic set"})
    outer_loop: int = field(default=0, metadata={"help": "image updates per iteration (0 = official get_loops)"})
    inner_loop: int = field(default=0, metadata={"help": "network epochs between image updates (0 = official)"})
    augment: bool = field(default=True, metadata={"help": "siamese augmentation (DSA); false = DC"})
    dsa_strategy: str = field(default=DEFAULT_STRATEGY, metadata={"help": "the DSA README drops flip for digits"})

    def loops(self) -> tuple[int, int]:
        outer, inner = default_loops(self.ipc)
        return self.outer_loop or outer, self.inner_loop or inner


@dataclass
class DCConfig(GradientMatchingConfig):
    """DC: gradient matching without augmentation; the code starts from noise."""

    augment: bool = field(default=False, metadata={"help": "siamese augmentation (DSA); false = DC"})
    init: str = field(default="noise", metadata={"help": "real, noise (DC code default), or a selection method"})


def class_gradient_distance(net: nn.Module, real: torch.Tensor, real_labels: torch.Tensor, syn: torch.Tensor,
                            syn_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Sum over classes of the layer-wise distance between the loss gradients on the real
    and on the synthetic images of the class (differentiable w.r.t. the synthetic images).

    One class at a time, as in the official code: batching the classes with ``torch.func``
    (``vmap`` of ``grad``) gave the same numbers but ran 5x slower on CPU (weight
    gradients of batched convolutions), and a class of 256 images keeps activations in
    cache where 10 classes at once do not."""
    params = list(net.parameters())
    real_parts = real.split(torch.bincount(real_labels, minlength=num_classes).tolist())
    syn_parts = syn.split(torch.bincount(syn_labels, minlength=num_classes).tolist())
    total = syn.new_zeros(())
    for c, (x_real, x_syn) in enumerate(zip(real_parts, syn_parts)):
        if not len(x_real) or not len(x_syn):
            continue
        target = torch.full((1,), c, device=syn.device)
        real_grads = torch.autograd.grad(F.cross_entropy(net(x_real), target.expand(len(x_real))), params)
        syn_grads = torch.autograd.grad(F.cross_entropy(net(x_syn), target.expand(len(x_syn))), params, create_graph=True)
        total = total + layerwise_distance([g.detach() for g in real_grads], list(syn_grads))
    return total


def freeze_batch_norm(net: nn.Module, real: torch.Tensor) -> None:
    """The code's treatment of batch-norm networks before matching: one train-mode forward
    of real images of every class (updates the running statistics), then eval mode."""
    if not has_batch_norm(net):
        return
    net.train()
    with torch.no_grad():
        net(real)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


class GradientMatcher:
    """One DC/DSA run: the images, the outer/inner loops and the network training."""

    def __init__(self, cfg: GradientMatchingConfig, trainer: ImageTrainer):
        self.cfg, self.trainer = cfg, trainer
        self.outer, self.inner = cfg.loops()

    def matching_loss(self, net: nn.Module) -> torch.Tensor:
        t, info = self.trainer, self.trainer.info
        real, real_labels = t.real_batch()
        syn, syn_labels = t.images, t.labels
        if self.cfg.augment:
            draw = t.augment.draw_groups(info.num_classes, info.image_size, t.device)
            with torch.no_grad():
                real = draw(real, real_labels)
            syn = draw(syn, syn_labels)
        return class_gradient_distance(net, real, real_labels, syn, syn_labels, info.num_classes)

    def train_network(self, net: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """``inner_loop`` epochs on the detached synthetic set (per-image DSA for DSA)."""
        t = self.trainer
        images, labels = t.images.detach(), t.labels
        net.train()
        for _ in range(self.inner):
            for idx in torch.randperm(len(images), generator=t.rng).split(self.cfg.batch_train):
                x = images[idx.to(t.device)]
                if self.cfg.augment:
                    x = t.augment(x)
                loss = F.cross_entropy(net(x), labels[idx.to(t.device)])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

    def iteration(self) -> float:
        t = self.trainer
        net = t.fresh_network()
        optimizer = torch.optim.SGD(net.parameters(), lr=self.cfg.lr_net)
        total = 0.0
        for step in range(self.outer):
            freeze_batch_norm(net, t.real_batch(BN_IMAGES_PER_CLASS)[0])
            loss = self.matching_loss(net)
            t.step(loss)
            total += float(loss.detach())
            if step < self.outer - 1:
                self.train_network(net, optimizer)
        return total / (self.outer * t.info.num_classes)


def gradient_matching(name: str, cfg: GradientMatchingConfig, splits: DatasetSplits, log=print) -> CondensedSet:
    cfg.check()
    keep_freed_memory()
    trainer = ImageTrainer(cfg, splits.train, resolve_device(cfg.device))
    matcher = GradientMatcher(cfg, trainer)
    log(f"{name}: outer loop {matcher.outer}, inner loop {matcher.inner}, {cfg.iterations} iterations")
    losses = run_iterations(cfg, name, lambda i: matcher.iteration(), log)
    return trainer.result(name, {"final_loss": losses[-1], "loops": [matcher.outer, matcher.inner]})


@register_method("dsa", kind="pixel", config=GradientMatchingConfig)
def dsa(cfg: GradientMatchingConfig, splits: DatasetSplits, log=print) -> CondensedSet:
    """DSA: gradient matching with differentiable siamese augmentation (Zhao & Bilen 2021)."""
    return gradient_matching("dsa", cfg, splits, log)


@register_method("dc", kind="pixel", config=DCConfig)
def dc(cfg: DCConfig, splits: DatasetSplits, log=print) -> CondensedSet:
    """DC: gradient matching without augmentation (Zhao, Mopuri & Bilen 2021)."""
    return gradient_matching("dc", cfg, splits, log)
