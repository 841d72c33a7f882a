"""Diffusion condensation: a class-conditional pixel-space diffusion model (DDPM, Ho et al.
2020; classifier-free guidance, Ho & Salimans 2022), optionally trained with the minimax
criteria of Minimax diffusion (Gu et al., CVPR 2024), in the shared generator trainer.

A step: real images in [-1, 1], one timestep per image drawn uniformly from the
``num_train_timesteps``, Gaussian noise, ``DDPMScheduler.add_noise``; the label replaced
by the null class with probability ``p_uncond``; the mean squared error between the UNet's
output and its target (the noise, or the velocity for ``v_prediction``). With ``condense``
the step adds the minimax terms (:mod:`gencond.losses.minimax`) on the clean image the
output implies, from epoch ``condense_from_epoch`` on; the official code condenses while
fine-tuning a pretrained DiT for a few epochs, so training plain and then condensing is
the default split here (``condense_from_epoch`` = half the epochs in the configs).

The criteria compare embeddings: by default the predicted clean image itself, as the official
code compares the model's output (``embedding: output``); with ``embedding: features``, the
pooled features of a network (``embed_net``) trained ``embed_epochs`` on the real training
split before the first step and frozen, through which the terms' gradients reach the UNet.

The memories hold the global batch's rows (every process adds what all processes drew),
so every process keeps the same memories and the main process's saved copy resumes any
of them. The official code keeps one memory per process; here, with one process, the
two are the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from gencond.engine.networks import real_data_network
from gencond.errors import GencondError
from gencond.losses.minimax import MinimaxMemory, minimax_losses
from gencond.methods._registry import register_method
from gencond.models import check_architecture
from gencond.models.diffusion import (
    DiffusionGenerator,
    check_sampling,
    check_schedule,
    check_unet,
    predicted_original,
)
from gencond.training.trainer import (
    GeneratorConfig,
    GeneratorTrainer,
    epoch_batches,
    run_trainer,
)


@dataclass
class DiffusionConfig(GeneratorConfig):
    """Every default of a diffusion run (DDPM's schedule, DiT's optimiser, Minimax's criteria)."""

    output_dir: str = field(default="runs/diffusion", metadata={"help": "checkpoints, sample grids, log, generator"})
    epochs: int = field(default=100, metadata={"help": "epochs over the training images"})
    batch_size: int = field(default=64, metadata={"help": "real batch per process"})
    lr: float = field(default=1e-4, metadata={"help": "AdamW learning rate (DiT, Minimax: 1e-4, constant)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (DiT: 0)"})
    ema_decay: float = field(default=0.9999, metadata={"help": "EMA of the weights (DiT: 0.9999; diffusers' EMAModel "
                                                                "warms up as (1 + n) / (10 + n) below it)"})
    # the UNet
    block_channels: list[int] = field(default_factory=lambda: [64, 128, 128], metadata={
        "help": "UNet widths, one per resolution level (the first at full size)"})
    layers_per_block: int = field(default=2, metadata={"help": "residual blocks per level"})
    attention_levels: list[int] = field(default_factory=lambda: [1], metadata={
        "help": "levels (0 = full size) with self-attention (DDPM: at 16x16)"})
    # the noise schedule
    num_train_timesteps: int = field(default=1000, metadata={"help": "diffusion steps T (DDPM: 1000)"})
    beta_schedule: str = field(default="linear", metadata={"help": "linear (DDPM) or squaredcos_cap_v2 (cosine)"})
    prediction_type: str = field(default="epsilon", metadata={"help": "epsilon or v_prediction"})
    p_uncond: float = field(default=0.1, metadata={"help": "probability a label is dropped to the null class "
                                                            "(classifier-free guidance)"})
    # serving defaults, saved with the generator
    sampler: str = field(default="ddim", metadata={"help": "ddim (eta 0) or dpm (DPM-Solver++ multistep, order 2)"})
    sampling_steps: int = field(default=25, metadata={"help": "sampler steps"})
    guidance_scale: float = field(default=2.0, metadata={"help": "classifier-free guidance w (1 = none)"})
    ddim_clip: str = field(default="consistent", metadata={
        "help": "DDIM's clipped clean image: consistent (step with the noise it implies, GLIDE) or image (step with "
                "the model's noise, diffusers' default)"})
    # the minimax criteria
    condense: bool = field(default=False, metadata={"help": "add the minimax criteria (Minimax diffusion)"})
    condense_from_epoch: int = field(default=0, metadata={"help": "first epoch (0-based) with the criteria"})
    lambda_pos: float = field(default=0.002, metadata={"help": "representativeness weight (official default)"})
    lambda_neg: float = field(default=0.008, metadata={"help": "diversity weight (official default)"})
    memory_size: int = field(default=64, metadata={"help": "rows per class in each memory (official default)"})
    embedding: str = field(default="output", metadata={
        "help": "what the criteria compare: output (the predicted clean image, as the official code) or features "
                "(a frozen network trained on the real images)"})
    embed_net: str = field(default="convnet3", metadata={"help": "embedding: features - its network"})
    embed_epochs: int = field(default=5, metadata={"help": "embedding: features - its epochs on the real images"})

    def check(self) -> None:
        super().check()
        if self.epochs <= 0 or self.batch_size <= 0 or self.lr <= 0 or self.weight_decay < 0:
            raise GencondError("epochs, batch_size and lr must be positive and weight_decay >= 0")
        check_unet(self.block_channels, self.layers_per_block, self.attention_levels)
        check_schedule(self.num_train_timesteps, self.beta_schedule, self.prediction_type)
        check_sampling(self.sampler, self.sampling_steps, self.guidance_scale, self.ddim_clip)
        if not 0.0 <= self.p_uncond < 1.0:
            raise GencondError(f"p_uncond must be in [0, 1), got {self.p_uncond}")
        if self.memory_size <= 0 or self.lambda_pos < 0 or self.lambda_neg < 0 or self.condense_from_epoch < 0:
            raise GencondError("memory_size must be positive; lambda_pos, lambda_neg and condense_from_epoch >= 0")
        if self.embedding not in EMBEDDINGS:
            raise GencondError(f"embedding must be one of {', '.join(EMBEDDINGS)}, got {self.embedding!r}")
        if self.embedding == "features":
            check_architecture(self.embed_net)
            if self.embed_epochs < 1:
                raise GencondError(f"embed_epochs must be >= 1, got {self.embed_epochs}")


EMBEDDINGS = ("output", "features")


def minimax_embeddings(embedder: torch.nn.Module | None, info, clean: torch.Tensor,
                       predicted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows the criteria compare, (real, generated), for clean and predicted images in
    [-1, 1]: the flattened images, or the ``embedder``'s pooled features of them in the
    dataset's normalized space (the generated ones keep their gradient)."""
    if embedder is None:
        return clean.flatten(1), predicted.flatten(1)
    with torch.no_grad():
        real = embedder.forward_features(info.from_generator_range(clean))
    return real, embedder.forward_features(info.from_generator_range(predicted))


@dataclass
class EpochContext:
    """The epoch's stream, shared by every process: the noise, timesteps and label drops
    paired with the global real batch (seeded by seed and epoch)."""

    shared: torch.Generator
    condense: bool


class DiffusionTrainer(GeneratorTrainer):
    """Denoising score matching (+ the minimax criteria) as hooks of the shared trainer."""

    method = "diffusion"
    reads_real_batches = True

    def build(self) -> dict:
        cfg, info = self.cfg, self.info
        gen = DiffusionGenerator(
            info.num_classes, info.channels, info.image_size, block_channels=cfg.block_channels,
            layers_per_block=cfg.layers_per_block, attention_levels=cfg.attention_levels,
            num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
            prediction_type=cfg.prediction_type, sampler=cfg.sampler, sampling_steps=cfg.sampling_steps,
            guidance_scale=cfg.guidance_scale, ddim_clip=cfg.ddim_clip, dataset=info.to_dict())
        self.scheduler = gen.training_scheduler()
        self.memory = self.embedder = None
        if cfg.condense:
            if cfg.embedding == "features":
                self.embedder = self.frozen_embedder()
            dim = self.embedder.num_features if self.embedder is not None else gen.latent_dim
            self.memory = MinimaxMemory(info.num_classes, cfg.memory_size, dim, self.accelerator.device)
            self.accelerator.register_for_checkpointing(self.memory)
        opt = torch.optim.AdamW(gen.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, **self.optimizer_options)
        return {"gen": gen, "opt": opt}

    def frozen_embedder(self) -> torch.nn.Module:
        """``embed_net`` trained on the real training split from the run's seed, the main
        process's weights on every process, frozen; saved with the run so a resume uses the same."""
        from accelerate.utils import broadcast

        cfg = self.cfg
        net = real_data_network(self.train, cfg.embed_net, cfg.embed_epochs, self.device, cfg.seed)
        with torch.no_grad():
            for tensor in net.state_dict().values():
                tensor.copy_(broadcast(tensor.clone(), from_process=0))
        self.accelerator.register_for_checkpointing(net)
        return net.requires_grad_(False)

    def header(self) -> str:
        cfg = self.cfg
        minimax = f", minimax from epoch {cfg.condense_from_epoch + 1}" if cfg.condense else ""
        return f"{super().header()}, {cfg.epochs} epochs{minimax}"

    def start_epoch(self, epoch: int) -> tuple[EpochContext, list[torch.Tensor]]:
        cfg = self.cfg
        shared = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch * 101)
        batches = epoch_batches(len(self.train), cfg.batch_size, self.rank, self.world, cfg.seed, epoch,
                                cfg.steps_per_epoch)
        return EpochContext(shared, cfg.condense and epoch >= cfg.condense_from_epoch), batches

    def describe(self, ctx: EpochContext) -> dict:
        return {"minimax": ctx.condense} if self.cfg.condense else {}

    def train_step(self, ctx: EpochContext, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg, acc, gen = self.cfg, self.accelerator, self.raw_gen
        real, labels = batch
        clean, n = self.info.to_generator_range(real), len(labels)
        noise = self.global_draw(lambda m: torch.randn(m, *clean.shape[1:], generator=ctx.shared), n).to(self.device)
        steps = self.global_draw(lambda m: torch.randint(cfg.num_train_timesteps, (m,), generator=ctx.shared), n)
        drop = self.global_draw(lambda m: torch.rand(m, generator=ctx.shared), n) < cfg.p_uncond
        steps, drop = steps.to(self.device), drop.to(self.device)
        noisy = self.scheduler.add_noise(clean, noise, steps)
        target = noise if cfg.prediction_type == "epsilon" else self.scheduler.get_velocity(clean, noise, steps)
        output = self.generate(noisy, steps, torch.where(drop, gen.null_class, labels)).float()
        loss = F.mse_loss(output, target)
        losses = {"mse": loss.detach()}
        if ctx.condense:
            predicted = predicted_original(self.scheduler, noisy, output, steps, cfg.prediction_type)
            real, fake = minimax_embeddings(self.embedder, self.info, clean, predicted)
            pos, neg = minimax_losses(fake, labels, self.memory, cfg.lambda_pos, cfg.lambda_neg)
            loss = loss + pos + neg
            losses.update(pos=pos.detach(), neg=neg.detach())
            self.memory.update(acc.gather(real), acc.gather(fake.detach()), acc.gather(labels))
        self.opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        self.opt.step()
        self.ema_step()
        return losses


def train_diffusion(cfg: DiffusionConfig, resume: bool = False) -> Path:
    """Train the diffusion generator; returns the folder of the saved generator."""
    return run_trainer(DiffusionTrainer, cfg, resume)


@register_method("diffusion", kind="generator", config=DiffusionConfig)
def diffusion(cfg: DiffusionConfig, resume: bool = False) -> Path:
    """Class-conditional diffusion (DDPM + classifier-free guidance), optionally with Minimax's criteria."""
    return train_diffusion(cfg, resume)
