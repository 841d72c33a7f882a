"""DiM: distil a dataset into a conditional GAN (Wang, Gu et al. 2023).

Algorithm 1 of the paper, as a plain Accelerate training loop:

phase 1 (``gan_epochs`` = N, 120 in the paper)
    auxiliary-classifier Wasserstein GAN with gradient penalty: per real batch one
    generator step (critic score + class cross-entropy on the generated batch, labels of
    the real batch) and one discriminator step (critic difference + class cross-entropy
    on real and on generated images + lambda_GP * gradient penalty, lambda_GP = 10).
phase 2 (``match_epochs``)
    the same GAN loss plus ``match_weight`` (lambda = 0.01) x a matching loss between
    what a pool network makes of a class-balanced real batch and of a generated batch of
    the same labels. At the start of every epoch one network is drawn from the pool
    (ConvNet-3, ResNet-10, ResNet-18 by default) and freshly initialised; before every
    generator step it trains on ``pool_training.batches`` real batches (SGD, per-image DSA
    ``pool_training.dsa_strategy``),
    so the supervision moves from a random to a trained network within the epoch, as in
    the official code. With ``match_augment`` the real and generated batches share one
    DSA draw (siamese).

Paper defaults, with the official code's choices as options: matching ``logits`` (code:
``log_softmax``); phase 2 keeps the learning rate 1e-4 (code: ``match_lr: 5e-6``);
conditioning ``overwrite`` (the code; the paper's concatenation is ``concat``). Images
are in [-1, 1] for the GAN and in the dataset's normalized space for pool networks.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from gencond.augment import DSA
from gencond.data import ClassSampler, ImageSet
from gencond.engine.networks import RealBatchConfig, RealBatchTrainer
from gencond.errors import GencondError
from gencond.losses.adversarial import wgan_discriminator_loss, wgan_generator_loss
from gencond.losses.matching import get_matching
from gencond.methods._registry import register_method
from gencond.models import ModelPool, check_architecture
from gencond.models.gan import DiMDiscriminator, DiMGenerator
from gencond.training.trainer import (
    GeneratorConfig,
    GeneratorTrainer,
    epoch_batches,
    run_trainer,
)

PHASE1_DIR = "generator_phase1"


@dataclass
class DiMConfig(GeneratorConfig):
    """Every default of a DiM run (paper settings unless noted)."""

    output_dir: str = field(default="runs/dim", metadata={"help": "checkpoints, sample grids, log, generator"})
    # networks
    width: int = field(default=196, metadata={"help": "generator and discriminator width"})
    noise_dim: int = field(default=100, metadata={"help": "noise size K"})
    conditioning: str = field(default="overwrite", metadata={"help": "overwrite (official code) or concat (paper eq. 4)"})
    leaky_slope: float = field(default=0.01, metadata={"help": "discriminator LeakyReLU slope (code: PyTorch default)"})
    # GAN optimisation
    batch_size: int = field(default=64, metadata={"help": "real batch per process (paper B = 64; code phase 1: 128)"})
    lr: float = field(default=1e-4, metadata={"help": "Adam learning rate of G and D"})
    beta1: float = field(default=0.0, metadata={"help": "Adam beta1 of G and D"})
    beta2: float = field(default=0.9, metadata={"help": "Adam beta2 of G and D"})
    gp_weight: float = field(default=10.0, metadata={"help": "gradient-penalty weight"})
    gan_epochs: int = field(default=120, metadata={"help": "phase 1 epochs N (GAN only)"})
    match_epochs: int = field(default=100, metadata={"help": "phase 2 epochs (GAN + matching; code default 100)"})
    # matching
    match: str = field(default="logits", metadata={"help": "logits (paper), log_softmax (code), features, gradients"})
    match_weight: float = field(default=0.01, metadata={"help": "lambda"})
    match_lr: float = field(default=0.0, metadata={"help": "phase-2 learning rate of G and D (0 = keep lr; code 5e-6)"})
    match_batch: int = field(default=64, metadata={"help": "class-balanced matching batch (B // C images per class)"})
    match_augment: bool = field(default=True, metadata={"help": "one shared DSA draw for the matched pair (siamese)"})
    pool: list[str] = field(default_factory=lambda: ["convnet3", "resnet10_cifar", "resnet18_cifar"], metadata={
        "help": "matching networks, one drawn and freshly initialised per phase-2 epoch (any timm name)"})
    pool_training: RealBatchConfig = field(default_factory=RealBatchConfig, metadata={
        "help": "the pool network's real-data training before every generator step (DiM code: 16 batches of 64, "
                "SGD 0.01, per-image color_crop: the matching strategy less cutout)"})
    dsa_strategy: str = field(default="color_crop_cutout", metadata={"help": "DSA operations (DiM code: color_crop_cutout)"})
    dsa_mode: str = field(default="idc", metadata={"help": "idc (DiM/IDC code) or dsa (one operation per call)"})

    @property
    def epochs(self) -> int:
        return self.gan_epochs + self.match_epochs

    def phase_epochs(self) -> dict[int, int]:
        return {1: self.gan_epochs, 2: self.match_epochs}

    def one_epoch_per_phase(self) -> DiMConfig:
        return replace(self, gan_epochs=1, match_epochs=1)

    def check(self) -> None:
        super().check()
        if self.gan_epochs < 0 or self.match_epochs < 0 or self.epochs == 0:
            raise GencondError("gan_epochs and match_epochs must be non-negative, and not both zero")
        for name in ("width", "noise_dim", "batch_size", "match_batch"):
            if getattr(self, name) <= 0:
                raise GencondError(f"{name} must be positive, got {getattr(self, name)}")
        get_matching(self.match)
        DSA(self.dsa_strategy, self.dsa_mode)
        self.pool_training.check(self.dsa_mode)
        if self.match_epochs and not self.pool:
            raise GencondError("phase 2 needs at least one pool network")
        for name in self.pool:
            check_architecture(name)


# What phase 1 (the GAN alone) never reads: runs that differ only here share their GAN phase.
MATCHING_FIELDS = ("match_epochs", "match", "match_weight", "match_lr", "match_batch", "match_augment", "pool",
                   "pool_training", "dsa_strategy", "dsa_mode")


def balanced_labels(batch: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Labels grouped by class: ``batch // C`` of every class, or one each of ``batch``
    random classes when there are more classes than images."""
    if num_classes <= batch:
        return torch.arange(num_classes).repeat_interleave(batch // num_classes)
    return torch.randperm(num_classes, generator=generator)[:batch].sort().values


class PoolTrainer:
    """The pool network of the current epoch, trained on real data between generator steps."""

    def __init__(self, cfg: DiMConfig, train: ImageSet, epoch: int, generator: torch.Generator, device):
        info = train.info
        pool = ModelPool(cfg.pool, info.num_classes, info.channels, info.image_size, seed=cfg.seed * 7919 + epoch)
        self.name, self.net = pool.draw()
        self.net.to(device).train()
        self.trainer = RealBatchTrainer(self.net, train, cfg.pool_training, cfg.dsa_mode, generator, device)

    def train_steps(self, autocast) -> None:
        self.trainer.autocast = autocast
        self.trainer.update()

    def state_dict(self) -> dict:
        """The network and its optimiser (a run resumed mid-epoch continues from them)."""
        return {"net": self.net.state_dict(), "optimizer": self.trainer.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.trainer.optimizer.load_state_dict(state["optimizer"])


def matching_loss(cfg: DiMConfig, pool: PoolTrainer, info, real: torch.Tensor, fake: torch.Tensor,
                  labels: torch.Tensor, augment: DSA) -> torch.Tensor:
    """lambda x matching loss between a real batch (normalized space) and generated images
    ([-1, 1]) of the same labels, through the current pool network."""
    matching = get_matching(cfg.match)
    pool.net.requires_grad_(matching.needs_parameter_gradients)
    fake = info.from_generator_range(fake)
    if cfg.match_augment:
        real, fake = augment.siamese(real, fake)
    return cfg.match_weight * matching.fn(pool.net, real, fake, labels)


@dataclass
class EpochContext:
    """What one epoch of one process draws from: its own stream (the pool network's and
    matching's draws), the stream every process shares (the random values paired with the
    real batch: generator noise in phase 1, the critic's generated labels, noise and
    interpolation weights, drawn for the global batch), real-data sampler, pool network
    (phase 2) and siamese augmentation. Seeded by (seed, epoch, rank) and (seed, epoch);
    one process uses one stream for both. A run resumed at an epoch boundary continues
    exactly; within an epoch, the trainer's ``context_state`` keeps the streams' states
    and the pool network's."""

    phase: int
    rng: torch.Generator
    shared: torch.Generator
    sampler: ClassSampler
    pool: PoolTrainer | None
    match_augment: DSA


class DiMTrainer(GeneratorTrainer):
    """Algorithm 1 of DiM as hooks of the shared generator trainer."""

    method = "dim"
    reads_real_batches = True

    def build(self) -> dict:
        cfg, info = self.cfg, self.info
        gen = DiMGenerator(info.num_classes, info.channels, info.image_size, cfg.width, cfg.noise_dim, cfg.conditioning,
                           info.to_dict())
        disc = DiMDiscriminator(info.num_classes, info.channels, info.image_size, cfg.width, cfg.leaky_slope)
        opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **self.optimizer_options)
        opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **self.optimizer_options)
        return {"gen": gen, "disc": disc, "opt_g": opt_g, "opt_d": opt_d}

    def header(self) -> str:
        return f"{super().header()}, epochs {self.cfg.gan_epochs} GAN + {self.cfg.match_epochs} matching"

    def start_epoch(self, epoch: int) -> tuple[EpochContext, list[torch.Tensor]]:
        cfg = self.cfg
        phase = 1 if epoch < cfg.gan_epochs else 2
        lr = cfg.match_lr if phase == 2 and cfg.match_lr > 0 else cfg.lr
        for group in [*self.opt_g.param_groups, *self.opt_d.param_groups]:
            group["lr"] = lr
        seed = cfg.seed * 1_000_003 + epoch * 101
        shared = torch.Generator().manual_seed(seed)
        rng = shared if self.world == 1 else torch.Generator().manual_seed(seed + 1 + self.rank)
        pool = PoolTrainer(cfg, self.train, epoch, rng, self.device) if phase == 2 else None
        ctx = EpochContext(phase, rng, shared, ClassSampler(self.train, generator=rng), pool,
                           DSA(cfg.dsa_strategy, cfg.dsa_mode, generator=rng))
        batches = epoch_batches(len(self.train), cfg.batch_size, self.rank, self.world, cfg.seed, epoch,
                                cfg.steps_per_epoch)
        return ctx, batches

    def describe(self, ctx: EpochContext) -> dict:
        return {"phase": ctx.phase, **({"pool_network": ctx.pool.name} if ctx.pool else {})}

    def train_step(self, ctx: EpochContext, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        real_norm, real_labels = batch
        real = self.info.to_generator_range(real_norm)
        losses = self.generator_step(ctx, real_labels)
        losses.update(self.discriminator_step(ctx, real, real_labels))
        return losses

    def generator_step(self, ctx: EpochContext, real_labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Phase 1: GAN loss on a generated batch with the real batch's labels. Phase 2:
        the pool network trains on real data first, then GAN loss + lambda x matching on
        a class-balanced batch."""
        cfg, acc = self.cfg, self.accelerator
        if ctx.phase == 2:
            ctx.pool.train_steps(acc.autocast)
            labels = balanced_labels(cfg.match_batch, self.info.num_classes, ctx.rng)
            match_real = ctx.sampler.sample_aligned(labels, self.device)
            labels = labels.to(self.device)
            noise = torch.randn(len(labels), cfg.noise_dim, generator=ctx.rng)
        else:
            labels = real_labels
            noise = self.global_draw(lambda m: torch.randn(m, cfg.noise_dim, generator=ctx.shared), len(labels))
        noise = noise.to(self.device)
        raw_disc = self.accelerator.unwrap_model(self.disc)
        raw_disc.requires_grad_(False)  # the critic is only a loss here
        with acc.no_sync(self.disc):
            fake = self.generate(noise, labels)
            loss = wgan_generator_loss(self.disc, fake, labels)
            losses = {"g_gan": loss.detach()}
            if ctx.phase == 2:
                with acc.autocast():
                    match = matching_loss(cfg, ctx.pool, self.info, match_real, fake, labels, ctx.match_augment)
                losses["match"] = match.detach()
                loss = loss + match
            self.opt_g.zero_grad(set_to_none=True)
            acc.backward(loss)
        self.opt_g.step()
        raw_disc.requires_grad_(True)
        self.ema_step()
        return losses

    def discriminator_step(self, ctx: EpochContext, real: torch.Tensor, real_labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Critic step on the real batch and a generated batch of random labels."""
        n, rng = len(real), ctx.shared
        fake_labels = self.global_draw(lambda m: torch.randint(self.info.num_classes, (m,), generator=rng), n)
        noise = self.global_draw(lambda m: torch.randn(m, self.cfg.noise_dim, generator=rng), n)
        fake_labels, noise = fake_labels.to(self.device), noise.to(self.device)
        with torch.no_grad():
            fake = self.generate(noise, fake_labels)
        alpha = self.global_draw(lambda m: torch.rand(m, generator=rng), n).to(self.device)
        parts = wgan_discriminator_loss(self.disc, real, real_labels, fake, fake_labels, self.cfg.gp_weight, alpha)
        self.opt_d.zero_grad(set_to_none=True)
        self.accelerator.backward(parts["loss"])
        self.opt_d.step()
        return {("d_loss" if k == "loss" else k): v.detach() for k, v in parts.items()}

    def selection_points(self) -> list[int]:
        """Matching starts from the best-scored GAN state (``select_by: validation``)."""
        return [self.cfg.gan_epochs] if self.cfg.gan_epochs and self.cfg.match_epochs else []

    def after_epoch(self, epoch: int) -> None:
        if epoch == self.cfg.gan_epochs and self.cfg.match_epochs:
            chosen = {"selected_epoch": self.progress.best_epoch} if self.cfg.select_by == "validation" else {}
            self.export(self.out / PHASE1_DIR, phase=1, **chosen)


def train_dim(cfg: DiMConfig, resume: bool = False) -> Path:
    """Run DiM; returns the folder of the saved generator."""
    return run_trainer(DiMTrainer, cfg, resume)


@register_method("dim", kind="generator", config=DiMConfig)
def dim(cfg: DiMConfig, resume: bool = False) -> Path:
    """DiM: conditional GAN + logits matching against a model pool (Wang, Gu et al. 2023)."""
    return train_dim(cfg, resume)
