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
    generator step it trains on ``pool_train_batches`` real batches (SGD, per-image DSA
    ``pool_dsa_strategy``),
    so the supervision moves from a random to a trained network within the epoch, as in
    the official code. With ``match_augment`` the real and generated batches share one
    DSA draw (siamese).

Paper defaults, with the official code's choices as options: matching ``logits`` (code:
``log_softmax``); phase 2 keeps the learning rate 1e-4 (code: ``match_lr: 5e-6``);
conditioning ``overwrite`` (the code; the paper's concatenation is ``concat``). Images
are in [-1, 1] for the GAN and in the dataset's normalized space for pool networks.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gencond.artifacts import save_pretrained, write_json
from gencond.augment import DSA
from gencond.data import DEFAULT_DATASET, ClassSampler, ImageSet, load_dataset
from gencond.errors import GencondError
from gencond.evaluate.train import RealBatchTrainer
from gencond.methods import register_method
from gencond.methods.matching import get_matching
from gencond.models import ModelPool, check_architecture
from gencond.models.gan import Discriminator, Generator
from gencond.runtime import keep_freed_memory

STATE_DIR, GENERATOR_DIR, PHASE1_DIR = "state", "generator", "generator_phase1"


@dataclass
class DiMConfig:
    """Every default of a DiM run (paper settings unless noted)."""

    dataset: str = field(default=DEFAULT_DATASET, metadata={"help": "dataset name or npz:PATH"})
    data_root: str = "data"
    download: bool = False
    image_size: int = field(default=0, metadata={"help": "ImageFolder datasets only (0 = the dataset's default)"})
    output_dir: str = field(default="runs/dim", metadata={"help": "checkpoints, sample grids, log, generator"})
    seed: int = 0
    # networks
    width: int = field(default=196, metadata={"help": "generator and discriminator width"})
    noise_dim: int = field(default=100, metadata={"help": "noise size K"})
    conditioning: str = field(default="overwrite", metadata={"help": "overwrite (official code) or concat (paper eq. 4)"})
    leaky_slope: float = field(default=0.01, metadata={"help": "discriminator LeakyReLU slope (code: PyTorch default)"})
    # GAN optimisation
    batch_size: int = field(default=64, metadata={"help": "real batch per process (paper B = 64; code phase 1: 128)"})
    lr: float = field(default=1e-4, metadata={"help": "Adam learning rate of G and D"})
    beta1: float = 0.0
    beta2: float = 0.9
    gp_weight: float = field(default=10.0, metadata={"help": "gradient-penalty weight"})
    gan_epochs: int = field(default=120, metadata={"help": "phase 1 epochs N (GAN only)"})
    match_epochs: int = field(default=100, metadata={"help": "phase 2 epochs (GAN + matching; code default 100)"})
    steps_per_epoch: int = field(default=0, metadata={"help": "cap on steps per epoch (0 = one pass over the data)"})
    # matching
    match: str = field(default="logits", metadata={"help": "logits (paper), log_softmax (code), features, gradients"})
    match_weight: float = field(default=0.01, metadata={"help": "lambda"})
    match_lr: float = field(default=0.0, metadata={"help": "phase-2 learning rate of G and D (0 = keep lr; code 5e-6)"})
    match_batch: int = field(default=64, metadata={"help": "class-balanced matching batch (B // C images per class)"})
    match_augment: bool = field(default=True, metadata={"help": "one shared DSA draw for the matched pair (siamese)"})
    pool: list[str] = field(default_factory=lambda: ["convnet3", "resnet10_cifar", "resnet18_cifar"])
    pool_train_batches: int = field(default=16, metadata={"help": "real batches a pool network trains on per G step"})
    pool_batch: int = 64
    pool_lr: float = 0.01
    pool_momentum: float = 0.9
    pool_weight_decay: float = 5e-4
    dsa_strategy: str = field(default="color_crop_cutout", metadata={"help": "DSA operations (DiM code: color_crop_cutout)"})
    pool_dsa_strategy: str = field(default="color_crop", metadata={
        "help": "per-image DSA of the pool network's real batches (DiM code: dsa_strategy less cutout)"})
    dsa_mode: str = field(default="idc", metadata={"help": "idc (DiM/IDC code) or dsa (one operation per call)"})
    # extras
    ema_decay: float = field(default=0.0, metadata={"help": "EMA of the generator weights (diffusers EMAModel); 0 = off"})
    mixed_precision: str = field(default="no", metadata={"help": "no or bf16"})
    sample_every: int = field(default=1, metadata={"help": "save a class-by-row sample grid every N epochs (0 = never)"})

    @property
    def epochs(self) -> int:
        return self.gan_epochs + self.match_epochs

    def check(self) -> None:
        if self.gan_epochs < 0 or self.match_epochs < 0 or self.epochs == 0:
            raise GencondError("gan_epochs and match_epochs must be non-negative, and not both zero")
        for name in ("width", "noise_dim", "batch_size", "match_batch", "pool_batch"):
            if getattr(self, name) <= 0:
                raise GencondError(f"{name} must be positive, got {getattr(self, name)}")
        if self.mixed_precision not in ("no", "bf16"):
            raise GencondError(f"mixed_precision must be no or bf16, got {self.mixed_precision!r}")
        get_matching(self.match)
        DSA(self.dsa_strategy, self.dsa_mode)
        DSA(self.pool_dsa_strategy, self.dsa_mode)
        if self.match_epochs and not self.pool:
            raise GencondError("phase 2 needs at least one pool network")
        for name in self.pool:
            check_architecture(name)


# --- losses ---


def generator_gan_loss(disc: nn.Module, fake: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """AC-WGAN generator loss: -critic(fake) + CE(class head(fake), labels)."""
    score, logits = disc(fake)
    return -score.mean() + F.cross_entropy(logits, labels)


def gradient_penalty(critic_of_interpolates: torch.Tensor, interpolates: torch.Tensor) -> torch.Tensor:
    """Mean over samples of (||d critic / d x||_2 - 1)^2 at the interpolates (Gulrajani et al. 2017)."""
    (grads,) = torch.autograd.grad(critic_of_interpolates.sum(), interpolates, create_graph=True)
    return ((grads.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def discriminator_loss(disc: nn.Module, real: torch.Tensor, real_labels: torch.Tensor, fake: torch.Tensor,
                       fake_labels: torch.Tensor, gp_weight: float, alpha: torch.Tensor) -> dict[str, torch.Tensor]:
    """AC-WGAN-GP critic loss. Real and generated images go through the critic as one
    batch (every critic layer is per-sample, so this equals two passes); the interpolates
    get a pass of their own so the double backward of the penalty covers only them."""
    scores, logits = disc(torch.cat([real, fake]))
    n = len(real)
    wasserstein = scores[n:].mean() - scores[:n].mean()
    classification = F.cross_entropy(logits[:n], real_labels) + F.cross_entropy(logits[n:], fake_labels)
    weight = alpha.view(-1, 1, 1, 1)
    interpolates = (weight * real + (1 - weight) * fake).requires_grad_(True)
    penalty = gradient_penalty(disc(interpolates)[0], interpolates)
    return {"loss": wasserstein + classification + gp_weight * penalty, "wasserstein": wasserstein,
            "d_class": classification, "gp": penalty}


# --- data helpers ---


def to_gan_range(info, normalized: torch.Tensor) -> torch.Tensor:
    return info.denormalize(normalized) * 2 - 1


def to_network_space(info, gan_images: torch.Tensor) -> torch.Tensor:
    return info.normalize((gan_images + 1) / 2)


def balanced_labels(batch: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Labels grouped by class: ``batch // C`` of every class, or one each of ``batch``
    random classes when there are more classes than images."""
    if num_classes <= batch:
        return torch.arange(num_classes).repeat_interleave(batch // num_classes)
    return torch.randperm(num_classes, generator=generator)[:batch].sort().values


def epoch_batches(num_items: int, batch: int, rank: int, world: int, seed: int, epoch: int, cap: int) -> list[torch.Tensor]:
    """This process's real batches of an epoch: one permutation shared by every process
    (seeded by seed and epoch, so a resumed run sees the same order), split by rank."""
    perm = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    steps = num_items // (batch * world)
    if cap:
        steps = min(steps, cap)
    if steps == 0:
        raise GencondError(f"{num_items} training images are fewer than one batch of {batch} x {world} process(es)")
    mine = perm[rank::world]
    return [mine[i * batch:(i + 1) * batch] for i in range(steps)]


class Progress:
    """The epoch counter, saved and restored with Accelerate's training state."""

    def __init__(self):
        self.epoch = 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])


class PoolTrainer:
    """The pool network of the current epoch, trained on real data between generator steps."""

    def __init__(self, cfg: DiMConfig, train: ImageSet, epoch: int, generator: torch.Generator, device):
        info = train.info
        pool = ModelPool(cfg.pool, info.num_classes, info.channels, info.image_size, seed=cfg.seed * 7919 + epoch)
        self.name, self.net = pool.draw()
        self.net.to(device).train()
        optimizer = torch.optim.SGD(self.net.parameters(), lr=cfg.pool_lr, momentum=cfg.pool_momentum,
                                    weight_decay=cfg.pool_weight_decay)
        augment = DSA(cfg.pool_dsa_strategy, cfg.dsa_mode, generator=generator)
        self.trainer = RealBatchTrainer(self.net, train, cfg.pool_batch, optimizer, augment, generator, device)
        self.batches = cfg.pool_train_batches

    def train_steps(self, autocast) -> None:
        self.trainer.autocast = autocast
        self.trainer.steps(self.batches)


def matching_loss(cfg: DiMConfig, pool: PoolTrainer, info, real: torch.Tensor, fake: torch.Tensor,
                  labels: torch.Tensor, augment: DSA) -> torch.Tensor:
    """lambda x matching loss between a real batch (normalized space) and generated images
    ([-1, 1]) of the same labels, through the current pool network."""
    matching = get_matching(cfg.match)
    pool.net.requires_grad_(matching.needs_parameter_gradients)
    fake = to_network_space(info, fake)
    if cfg.match_augment:
        real, fake = augment.siamese(real, fake)
    return cfg.match_weight * matching.fn(pool.net, real, fake, labels)


# --- training ---


def build_networks(cfg: DiMConfig, info) -> tuple[Generator, Discriminator]:
    gen = Generator(info.num_classes, info.channels, info.image_size, cfg.width, cfg.noise_dim, cfg.conditioning)
    disc = Discriminator(info.num_classes, info.channels, info.image_size, cfg.width, cfg.leaky_slope)
    return gen, disc


@torch.no_grad()
def save_sample_grid(gen: nn.Module, info, path: Path, columns: int = 10, seed: int = 0) -> None:
    """One row per class (at most 20 classes shown), fixed noise, eval-mode generator."""
    from torchvision.utils import save_image

    classes = torch.arange(min(info.num_classes, 20))
    labels = classes.repeat_interleave(columns)
    noise = torch.randn(len(labels), gen.noise_dim, generator=torch.Generator().manual_seed(seed))
    device = next(gen.parameters()).device
    was_training = gen.training
    gen.eval()
    images = (gen(noise.to(device), labels.to(device)).float() + 1) / 2
    gen.train(was_training)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images.clamp(0, 1).cpu(), str(path), nrow=columns)


def _save_state_atomically(accelerator, out: Path) -> None:
    """Accelerate writes into a fresh folder; the main process then swaps it in."""
    tmp, final, old = out / f"{STATE_DIR}.tmp", out / STATE_DIR, out / f"{STATE_DIR}.old"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _resume_dir(out: Path) -> Path | None:
    for name in (STATE_DIR, f"{STATE_DIR}.old"):
        if (out / name).is_dir():
            return out / name
    return None


def _checksum(module: nn.Module) -> float:
    return float(sum(p.detach().double().sum() for p in module.parameters()))


@dataclass
class EpochContext:
    """What one epoch of one process draws from: its random stream, real-data sampler,
    pool network (phase 2) and siamese augmentation. Seeded by (seed, epoch, rank), so a
    run resumed at an epoch boundary continues exactly."""

    phase: int
    rng: torch.Generator
    sampler: ClassSampler
    pool: PoolTrainer | None
    match_augment: DSA


class DiMTrainer:
    """The training loop of :func:`train_dim`, one method per step of Algorithm 1."""

    def __init__(self, cfg: DiMConfig):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        cfg.check()
        keep_freed_memory()
        self.cfg = cfg
        # Without a GPU, cpu=True lets Accelerate pick gloo data parallelism under torchrun.
        self.accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available())
        set_seed(cfg.seed)
        self.out = Path(cfg.output_dir)
        splits = load_dataset(cfg.dataset, cfg.data_root, cfg.download, cfg.image_size or None)
        self.train, self.info = splits.train, splits.info
        gen, disc = build_networks(cfg, self.info)
        opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        self.gen, self.disc, self.opt_g, self.opt_d = self.accelerator.prepare(gen, disc, opt_g, opt_d)
        self.raw_gen = self.accelerator.unwrap_model(self.gen)
        self.raw_disc = self.accelerator.unwrap_model(self.disc)
        self.progress = Progress()
        self.accelerator.register_for_checkpointing(self.progress)
        self.ema = None
        if cfg.ema_decay > 0:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(self.raw_gen.parameters(), decay=cfg.ema_decay)
            self.accelerator.register_for_checkpointing(self.ema)
        self.device = self.accelerator.device
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes

    def resume(self) -> None:
        state = _resume_dir(self.out)
        if state is None:
            raise GencondError(f"--resume: no saved training state under {self.out}")
        self.accelerator.load_state(str(state))
        self.accelerator.print(f"resumed from {state} at epoch {self.progress.epoch}")

    def epoch_context(self, epoch: int) -> EpochContext:
        cfg = self.cfg
        phase = 1 if epoch < cfg.gan_epochs else 2
        lr = cfg.match_lr if phase == 2 and cfg.match_lr > 0 else cfg.lr
        for group in [*self.opt_g.param_groups, *self.opt_d.param_groups]:
            group["lr"] = lr
        rng = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch * 101 + self.rank)
        pool = PoolTrainer(cfg, self.train, epoch, rng, self.device) if phase == 2 else None
        return EpochContext(phase, rng, ClassSampler(self.train, generator=rng), pool,
                            DSA(cfg.dsa_strategy, cfg.dsa_mode, generator=rng))

    def generator_step(self, ctx: EpochContext, real_labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Phase 1: GAN loss on a generated batch with the real batch's labels. Phase 2:
        the pool network trains on real data first, then GAN loss + lambda x matching on
        a class-balanced batch."""
        cfg, acc = self.cfg, self.accelerator
        if ctx.phase == 2:
            ctx.pool.train_steps(acc.autocast)
            labels = balanced_labels(cfg.match_batch, self.info.num_classes, ctx.rng)
            match_real = ctx.sampler.sample_aligned(labels).to(self.device)
            labels = labels.to(self.device)
        else:
            labels = real_labels
        noise = torch.randn(len(labels), cfg.noise_dim, generator=ctx.rng).to(self.device)
        self.raw_disc.requires_grad_(False)  # the critic is only a loss here
        with acc.no_sync(self.disc):
            fake = self.gen(noise, labels)
            loss = generator_gan_loss(self.disc, fake, labels)
            losses = {"g_gan": loss.detach()}
            if ctx.phase == 2:
                with acc.autocast():
                    match = matching_loss(cfg, ctx.pool, self.info, match_real, fake, labels, ctx.match_augment)
                losses["match"] = match.detach()
                loss = loss + match
            self.opt_g.zero_grad(set_to_none=True)
            acc.backward(loss)
        self.opt_g.step()
        self.raw_disc.requires_grad_(True)
        if self.ema is not None:
            self.ema.step(self.raw_gen.parameters())
        return losses

    def discriminator_step(self, ctx: EpochContext, real: torch.Tensor, real_labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Critic step on the real batch and a generated batch of random labels."""
        n, rng = len(real), ctx.rng
        fake_labels = torch.randint(self.info.num_classes, (n,), generator=rng).to(self.device)
        noise = torch.randn(n, self.cfg.noise_dim, generator=rng).to(self.device)
        with torch.no_grad():
            fake = self.gen(noise, fake_labels)
        alpha = torch.rand(n, generator=rng).to(self.device)
        parts = discriminator_loss(self.disc, real, real_labels, fake, fake_labels, self.cfg.gp_weight, alpha)
        self.opt_d.zero_grad(set_to_none=True)
        self.accelerator.backward(parts["loss"])
        self.opt_d.step()
        return {("d_loss" if k == "loss" else k): v.detach() for k, v in parts.items()}

    def run_epoch(self, epoch: int) -> dict:
        from tqdm.auto import tqdm

        cfg = self.cfg
        ctx = self.epoch_context(epoch)
        batches = epoch_batches(len(self.train), cfg.batch_size, self.rank, self.world, cfg.seed, epoch,
                                cfg.steps_per_epoch)
        totals: dict[str, float] = {}
        start = first_step_done = time.perf_counter()
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs} (phase {ctx.phase})",
                   disable=not self.accelerator.is_local_main_process, leave=False)
        for idx in bar:
            real_norm, real_labels = self.train.batch(idx)
            real, real_labels = to_gan_range(self.info, real_norm).to(self.device), real_labels.to(self.device)
            losses = self.generator_step(ctx, real_labels)
            losses.update(self.discriminator_step(ctx, real, real_labels))
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + float(v)
            bar.set_postfix({k: f"{float(v):.3f}" for k, v in losses.items()})
            if first_step_done == start:
                first_step_done = time.perf_counter()
        end = time.perf_counter()
        return {"epoch": epoch + 1, "phase": ctx.phase, "steps": len(batches), "seconds": round(end - start, 2),
                "seconds_per_step": round((end - start) / len(batches), 4),
                "seconds_after_first_step": round(end - first_step_done, 3), "rank": self.rank,
                **({"pool_network": ctx.pool.name} if ctx.pool else {}),
                **{k: round(v / len(batches), 5) for k, v in totals.items()}}

    def end_of_epoch(self, record: dict) -> None:
        """Checkpoint (every process takes part), then the main process writes the rest."""
        cfg, epoch = self.cfg, record["epoch"]
        self.progress.epoch = epoch
        _save_state_atomically(self.accelerator, self.out)
        if self.accelerator.is_main_process:
            with open(self.out / "log.jsonl", "a") as log:
                log.write(json.dumps(record) + "\n")
            if cfg.sample_every and epoch % cfg.sample_every == 0:
                save_sample_grid(self.raw_gen, self.info, self.out / "samples" / f"epoch_{epoch:04d}.png")
            if epoch == cfg.gan_epochs and cfg.match_epochs:
                save_pretrained(self.raw_gen, self.out / PHASE1_DIR, self.info,
                                training={"method": "dim", "phase": 1, **asdict(cfg)})
        self.accelerator.print(f"epoch {epoch}: " + ", ".join(f"{k} {v}" for k, v in record.items()
                                                               if k not in ("epoch", "rank")))

    def finish(self) -> Path:
        """Save the generator (EMA weights if enabled) and a summary with every rank's
        generator checksum (data parallelism must keep them identical)."""
        acc = self.accelerator
        acc.wait_for_everyone()
        checksum = torch.tensor([_checksum(self.raw_gen)], dtype=torch.float64, device=self.device)
        checksums = acc.gather(checksum).cpu().tolist()
        if self.ema is not None:
            self.ema.store(self.raw_gen.parameters())
            self.ema.copy_to(self.raw_gen.parameters())
        if acc.is_main_process:
            save_pretrained(self.raw_gen, self.out / GENERATOR_DIR, self.info, training={"method": "dim", **asdict(self.cfg)})
            write_json(self.out / "summary.json", {"epochs": self.cfg.epochs, "processes": self.world,
                                                   "generator_checksum_per_rank": checksums,
                                                   "written_by_rank": self.rank})
        if self.ema is not None:
            self.ema.restore(self.raw_gen.parameters())
        acc.wait_for_everyone()
        acc.end_training()
        return self.out / GENERATOR_DIR

    def fit(self) -> Path:
        cfg, info = self.cfg, self.info
        if self.accelerator.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(self.out / "config.json", asdict(cfg))
        self.accelerator.print(f"DiM on {info.name}: {len(self.train)} images, {info.num_classes} classes, "
                               f"{self.world} process(es), epochs {cfg.gan_epochs} GAN + {cfg.match_epochs} matching, "
                               f"device {self.device}")
        for epoch in range(self.progress.epoch, cfg.epochs):
            self.end_of_epoch(self.run_epoch(epoch))
        return self.finish()


def train_dim(cfg: DiMConfig, resume: bool = False) -> Path:
    """Run DiM; returns the folder of the saved generator."""
    trainer = DiMTrainer(cfg)
    if resume:
        trainer.resume()
    return trainer.fit()


@register_method("dim", kind="generator", config=DiMConfig)
def dim(cfg: DiMConfig, resume: bool = False) -> Path:
    """DiM: conditional GAN + logits matching against a model pool (Wang, Gu et al. 2023)."""
    return train_dim(cfg, resume)
