"""IDC: dataset condensation via efficient synthetic-data parameterization (Kim et al.,
ICML 2022), Algorithm 1.

- Multi-formation: each stored image holds f x f blocks (f = 2), each decoded to a full
  training image (:mod:`gencond.data.formation`), so IPC stored images give f^2 IPC
  training images at the same pixel budget. Initialised from f^2 IPC random real
  images per class, shrunk into the blocks.
- Every outer iteration draws a freshly initialised network. For ``inner_loop`` (100)
  steps: for every class c, the gradients of the classification loss on ``batch_real``
  (64) real images of c and on the decoded synthetic images of c (at most
  ``batch_syn_max``, 128), both through one shared augmentation draw; the loss is a
  distance between the two gradients (``mse`` for CIFAR/SVHN, ``l1`` for MNIST/Fashion;
  summed over elements and over the conv layers; biases, norm and linear layers are
  skipped by default); one SGD step on class c's stored images. Then the network trains
  on real data (``net_training``: random mixed-class batches, 32 of 64 by default,
  per-image augmentation and CutMix), so matching happens along a real training path.
- Images are clamped to the valid pixel range once per outer iteration. The learning
  rate scales with IPC / 10, as the code's ``tune_lr_img`` does.

The per-class image steps are sequential as in Algorithm 1 and the code (one SGD step
with momentum per class); each step's gradient computation is one batched pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from gencond.artifacts import CondensedSet
from gencond.data import DatasetSplits, ImageSet
from gencond.data.formation import decode, encode, grey_pad
from gencond.engine.networks import RealBatchConfig, RealBatchTrainer, resolve_device
from gencond.errors import GencondError
from gencond.methods._registry import register_method
from gencond.methods.pixel import (
    ImageTrainer,
    PixelConfig,
    initial_images,
    run_iterations,
)
from gencond.runtime import keep_freed_memory

DISTANCES = {
    "mse": lambda a, b: ((a - b) ** 2).sum(),
    "l1": lambda a, b: (a - b).abs().sum(),
}


@dataclass
class IDCConfig(PixelConfig):
    """IDC defaults (the code's CIFAR-10 reproduction settings; see configs/idc/ for MNIST)."""

    factor: int = field(default=2, metadata={"help": "multi-formation factor f (1 = IDC-I)"})
    iterations: int = field(default=2000, metadata={"help": "outer iterations, a fresh network each"})
    inner_loop: int = field(default=100, metadata={"help": "image-update rounds per network (M)"})
    lr_img: float = field(default=5e-3, metadata={"help": "image lr at IPC 10 (MNIST: 1e-4); scaled by IPC / 10"})
    batch_real: int = field(default=64, metadata={"help": "real images per class per matching step"})
    batch_syn_max: int = field(default=128, metadata={"help": "decoded synthetic images per class at most"})
    distance: str = field(default="mse", metadata={"help": "mse (CIFAR, SVHN) or l1 (MNIST, Fashion)"})
    match_bias: bool = field(default=False, metadata={"help": "also match bias and norm gradients"})
    match_fc: bool = field(default=False, metadata={"help": "also match the linear head's weight gradient"})
    dsa_strategy: str = field(default="color_crop_cutout", metadata={"help": "matching augmentation (MNIST f>1: color_crop)"})
    dsa_mode: str = field(default="idc", metadata={"help": "idc (IDC code: flip, colour, cutout and one more) or dsa"})
    net_training: RealBatchConfig = field(default_factory=lambda: RealBatchConfig(batches=32, cutmix_prob=0.5), metadata={
        "help": "the matching network's real-data training per inner step: the code trains on 2000 real images "
                "(32 batches of 64; MNIST 500: 8), colour+crop, CutMix 0.5 (MNIST f>1: 0)"})

    def check(self) -> None:
        super().check()
        if self.factor < 1:
            raise GencondError(f"factor must be at least 1, got {self.factor}")
        if self.distance not in DISTANCES:
            raise GencondError(f"unknown distance {self.distance!r}; choose one of {', '.join(DISTANCES)}")
        for name in ("inner_loop", "batch_syn_max"):
            if getattr(self, name) <= 0:
                raise GencondError(f"{name} must be positive, got {getattr(self, name)}")
        self.net_training.check("idc")

    def image_lr(self) -> float:
        return self.lr_img * self.ipc / 10


def matched_parameters(net: nn.Module, match_bias: bool, match_fc: bool) -> list[nn.Parameter]:
    """The parameters whose gradients IDC compares: conv weights, plus 1-D (bias, norm)
    and 2-D (linear) ones on request."""
    keep = {4: True, 3: True, 2: match_fc, 1: match_bias}
    return [p for p in net.parameters() if keep.get(p.dim(), False)]


def gradient_distance(net: nn.Module, params: list[nn.Parameter], real: torch.Tensor, real_labels: torch.Tensor,
                      syn: torch.Tensor, syn_labels: torch.Tensor, distance: str) -> torch.Tensor:
    """Distance between the loss gradients on a real and a synthetic batch, summed over
    the given parameters (differentiable w.r.t. the synthetic batch)."""
    real_grads = torch.autograd.grad(F.cross_entropy(net(real), real_labels), params)
    syn_grads = torch.autograd.grad(F.cross_entropy(net(syn), syn_labels), params, create_graph=True)
    dist = DISTANCES[distance]
    return sum(dist(g_syn, g_real.detach()) for g_real, g_syn in zip(real_grads, syn_grads))


def initial_stored_images(cfg: IDCConfig, train: ImageSet) -> torch.Tensor:
    """f^2 x IPC starting images per class, shrunk and tiled into IPC stored images each."""
    f2 = cfg.factor ** 2
    images = initial_images(cfg, train, cfg.ipc * f2)
    c, ipc = train.info.num_classes, cfg.ipc
    # per class: block-major order (image k * ipc + m goes to block k of stored image m)
    per_class = images.view(c, f2 * ipc, *images.shape[1:])
    return torch.cat([encode(block, cfg.factor) for block in per_class])


class IDCRun:
    """The state of one IDC condensation."""

    def __init__(self, cfg: IDCConfig, train: ImageSet, device: torch.device):
        self.cfg, self.info, self.device = cfg, train.info, device
        self.trainer = ImageTrainer(cfg, train, device, images=initial_stored_images(cfg, train), lr=cfg.image_lr())
        bound = lambda value: self.info.normalize(torch.full((1, self.info.channels, 1, 1), value)).to(device)
        self.low, self.high = bound(0.0), bound(1.0)
        self.pad = grey_pad(self.info).to(device)

    def decoded_class(self, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Class c's decoded synthetic images (at most ``batch_syn_max``, a random subset)."""
        t, ipc = self.trainer, self.cfg.ipc
        images = decode(t.images[c * ipc:(c + 1) * ipc], self.cfg.factor, self.pad)
        if len(images) > self.cfg.batch_syn_max:
            keep = torch.randperm(len(images), generator=t.rng)[:self.cfg.batch_syn_max]
            images = images[keep.to(self.device)]
        return images, torch.full((len(images),), c, device=self.device)

    def clamp(self) -> None:
        with torch.no_grad():
            self.trainer.images.copy_(torch.maximum(torch.minimum(self.trainer.images, self.high), self.low))

    def iteration(self) -> float:
        cfg, t = self.cfg, self.trainer
        self.clamp()
        net = t.fresh_network().train()
        params = matched_parameters(net, cfg.match_bias, cfg.match_fc)
        real_trainer = RealBatchTrainer(net, t.train, cfg.net_training, "idc", t.rng, self.device)
        total = 0.0
        for _ in range(cfg.inner_loop):
            for c in range(self.info.num_classes):
                real, _ = t.sampler.sample([c], cfg.batch_real)
                real = real.to(self.device)
                syn, syn_labels = self.decoded_class(c)
                both = t.augment.draw(1, self.info.image_size, self.device)(torch.cat([real, syn]))
                labels = torch.full((len(real),), c, device=self.device)
                loss = gradient_distance(net, params, both[:len(real)], labels, both[len(real):], syn_labels, cfg.distance)
                t.step(loss)
                total += float(loss.detach())
            real_trainer.update()
        return total / (cfg.inner_loop * self.info.num_classes)

    def result(self, final_loss: float) -> CondensedSet:
        self.clamp()
        condensed = self.trainer.result("idc", {"final_loss": final_loss, "image_lr": self.cfg.image_lr()})
        condensed.factor = self.cfg.factor
        return condensed


@register_method("idc", kind="pixel", config=IDCConfig)
def idc(cfg: IDCConfig, splits: DatasetSplits, log=print) -> CondensedSet:
    """IDC: multi-formation + gradient matching along real training (Kim et al. 2022)."""
    cfg.check()
    keep_freed_memory()
    run = IDCRun(cfg, splits.train, resolve_device(cfg.device))
    losses = run_iterations(cfg, "idc", lambda i: run.iteration(), log)
    return run.result(losses[-1])
