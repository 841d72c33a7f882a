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
    generator step it trains on ``pool_train_batches`` real batches (SGD, per-image DSA),
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
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gencond.artifacts import save_pretrained, write_json
from gencond.augment import DSA
from gencond.data import ClassSampler, ImageSet, load_dataset
from gencond.errors import GencondError
from gencond.methods import register_method
from gencond.methods.matching import get_matching
from gencond.models import ModelPool
from gencond.models.gan import Discriminator, Generator

STATE_DIR, GENERATOR_DIR, PHASE1_DIR = "state", "generator", "generator_phase1"


@dataclass
class DiMConfig:
    """Every default of a DiM run (paper settings unless noted)."""

    dataset: str = field(default="cifar10", metadata={"help": "dataset name or npz:PATH"})
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
        if self.match_epochs and not self.pool:
            raise GencondError("phase 2 needs at least one pool network")


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
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=cfg.pool_lr, momentum=cfg.pool_momentum,
                                         weight_decay=cfg.pool_weight_decay)
        self.augment = DSA(cfg.dsa_strategy, cfg.dsa_mode, generator=generator)
        self.train, self.cfg, self.generator, self.device = train, cfg, generator, device

    def train_steps(self, autocast) -> None:
        self.net.requires_grad_(True)
        for _ in range(self.cfg.pool_train_batches):
            idx = torch.randint(len(self.train), (self.cfg.pool_batch,), generator=self.generator)
            x, y = self.train.batch(idx)
            x, y = self.augment(x.to(self.device)), y.to(self.device)
            with autocast():
                loss = F.cross_entropy(self.net(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()


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


def train_dim(cfg: DiMConfig, resume: bool = False) -> Path:
    """Run DiM; returns the folder of the saved generator."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    cfg.check()
    # Without a GPU, cpu=True lets Accelerate pick gloo data parallelism under torchrun.
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available())
    set_seed(cfg.seed)
    out = Path(cfg.output_dir)
    splits = load_dataset(cfg.dataset, cfg.data_root, cfg.download, cfg.image_size or None)
    train, info = splits.train, splits.info
    gen, disc = build_networks(cfg, info)
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    gen, disc, opt_g, opt_d = accelerator.prepare(gen, disc, opt_g, opt_d)
    raw_gen, raw_disc = accelerator.unwrap_model(gen), accelerator.unwrap_model(disc)
    progress = Progress()
    accelerator.register_for_checkpointing(progress)
    ema = None
    if cfg.ema_decay > 0:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(raw_gen.parameters(), decay=cfg.ema_decay)
        accelerator.register_for_checkpointing(ema)
    if resume:
        state = _resume_dir(out)
        if state is None:
            raise GencondError(f"--resume: no saved training state under {out}")
        accelerator.load_state(str(state))
        accelerator.print(f"resumed from {state} at epoch {progress.epoch}")
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", asdict(cfg))

    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    accelerator.print(f"DiM on {info.name}: {len(train)} images, {info.num_classes} classes, {world} process(es), "
                      f"epochs {cfg.gan_epochs} GAN + {cfg.match_epochs} matching, device {device}")
    for epoch in range(progress.epoch, cfg.epochs):
        phase = 1 if epoch < cfg.gan_epochs else 2
        lr = cfg.match_lr if phase == 2 and cfg.match_lr > 0 else cfg.lr
        for group in [*opt_g.param_groups, *opt_d.param_groups]:
            group["lr"] = lr
        rng = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch * 101 + rank)
        sampler = ClassSampler(train, generator=rng)
        pool = PoolTrainer(cfg, train, epoch, rng, device) if phase == 2 else None
        match_augment = DSA(cfg.dsa_strategy, cfg.dsa_mode, generator=rng)
        batches = epoch_batches(len(train), cfg.batch_size, rank, world, cfg.seed, epoch, cfg.steps_per_epoch)
        totals: dict[str, float] = {}
        start = time.perf_counter()
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs} (phase {phase})",
                   disable=not accelerator.is_local_main_process, leave=False)
        for idx in bar:
            real_norm, real_labels = train.batch(idx)
            real = to_gan_range(info, real_norm).to(device)
            real_labels = real_labels.to(device)

            # generator step
            if phase == 2:
                pool.train_steps(accelerator.autocast)
                labels = balanced_labels(cfg.match_batch, info.num_classes, rng)
                match_real = sampler.sample_aligned(labels).to(device)
                labels = labels.to(device)
            else:
                labels = real_labels
            noise = torch.randn(len(labels), cfg.noise_dim, generator=rng).to(device)
            raw_disc.requires_grad_(False)
            with accelerator.no_sync(disc):
                fake = gen(noise, labels)
                g_loss = generator_gan_loss(disc, fake, labels)
                losses = {"g_gan": g_loss.detach()}
                if phase == 2:
                    with accelerator.autocast():
                        m_loss = matching_loss(cfg, pool, info, match_real, fake, labels, match_augment)
                    losses["match"] = m_loss.detach()
                    g_loss = g_loss + m_loss
                opt_g.zero_grad(set_to_none=True)
                accelerator.backward(g_loss)
            opt_g.step()
            raw_disc.requires_grad_(True)
            if ema is not None:
                ema.step(raw_gen.parameters())

            # discriminator step
            fake_labels = torch.randint(info.num_classes, (len(real),), generator=rng).to(device)
            noise = torch.randn(len(real), cfg.noise_dim, generator=rng).to(device)
            with torch.no_grad():
                fake = gen(noise, fake_labels)
            alpha = torch.rand(len(real), generator=rng).to(device)
            d_losses = discriminator_loss(disc, real, real_labels, fake, fake_labels, cfg.gp_weight, alpha)
            opt_d.zero_grad(set_to_none=True)
            accelerator.backward(d_losses["loss"])
            opt_d.step()

            losses.update({k: v.detach() for k, v in d_losses.items() if k != "loss"})
            losses["d_loss"] = d_losses["loss"].detach()
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + float(v)
            bar.set_postfix({k: f"{float(v):.3f}" for k, v in losses.items()})
        seconds = time.perf_counter() - start
        progress.epoch = epoch + 1
        _save_state_atomically(accelerator, out)
        record = {"epoch": epoch + 1, "phase": phase, "steps": len(batches), "seconds": round(seconds, 2),
                  "seconds_per_step": round(seconds / len(batches), 4), "rank": rank,
                  **({"pool_network": pool.name} if pool else {}),
                  **{k: round(v / len(batches), 5) for k, v in totals.items()}}
        if accelerator.is_main_process:
            with open(out / "log.jsonl", "a") as log:
                log.write(json.dumps(record) + "\n")
            if cfg.sample_every and (epoch + 1) % cfg.sample_every == 0:
                save_sample_grid(raw_gen, info, out / "samples" / f"epoch_{epoch + 1:04d}.png")
            if phase == 1 and epoch + 1 == cfg.gan_epochs and cfg.match_epochs:
                save_pretrained(raw_gen, out / PHASE1_DIR, info, training={"method": "dim", "phase": 1, **asdict(cfg)})
        accelerator.print(f"epoch {epoch + 1}: " + ", ".join(f"{k} {v}" for k, v in record.items() if k not in ("epoch", "rank")))

    accelerator.wait_for_everyone()
    checksums = accelerator.gather(torch.tensor([_checksum(raw_gen)], dtype=torch.float64, device=device)).cpu()
    if ema is not None:
        ema.store(raw_gen.parameters())
        ema.copy_to(raw_gen.parameters())
    if accelerator.is_main_process:
        save_pretrained(raw_gen, out / GENERATOR_DIR, info, training={"method": "dim", **asdict(cfg)})
        write_json(out / "summary.json", {"epochs": cfg.epochs, "processes": world,
                                          "generator_checksum_per_rank": checksums.tolist(), "written_by_rank": rank})
    if ema is not None:
        ema.restore(raw_gen.parameters())
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return out / GENERATOR_DIR


@register_method("dim", kind="generator")
def dim(cfg: DiMConfig, resume: bool = False) -> Path:
    """DiM: conditional GAN + logits matching against a model pool (Wang, Gu et al. 2023)."""
    return train_dim(cfg, resume)


dim.config_class = DiMConfig
