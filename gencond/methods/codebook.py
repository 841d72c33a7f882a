"""Codebook-generator condensation: Zhang et al. (2023), "Dataset Condensation via
Generative Model" (no official code is public; the paper is the specification).

Algorithm 1 as hooks of the shared generator trainer. Every step:

1. the feature network phi (ConvNet-3; ConvNet-4 at 64x64), freshly initialised from
   ``phi_pool`` every ``phi_reinit_every`` updates, trains on real data (cross-entropy,
   ``phi_training``) once per ``generator_steps_per_phi_update`` generator steps;
2. for every class of the step, all K codes of the codebook Z go through the generator
   G with the class embedding; every class's association is ``association_size`` real
   images of it;
3. (Z, G) take one step on L_con = L_GAN + L_f + L_intra + L_inter, through phi:
   L_GAN = L_adv + L_c (a sigmoid MLP discriminator on phi's features conditioned on the
   class embedding, and a classifier head; Eq. 1), L_f the feature matching of every
   generated image to its association's mean features at every block of phi (Eq. 2),
   L_intra the InfoNCE of each generated sample against its class centre and the other
   samples of its class (Eq. 3), L_inter a hinge on the distances between the class
   means (Eq. 4). Every term has a weight; 0 switches it off (Table 8's rows);
4. the discriminator takes one step on real (the association) and generated features.

Paper settings: SGD with lr 0.01 for Z, 0.001 for G and 0.01 for phi, decayed linearly
over the epochs; class-feature conditioning (Table 6; ``one_hot`` and
``online_feature`` selectable); soft labels in L_c only on ImageNet-1K. Choices where the
paper is silent are the config's defaults, each with its reason in the field's help.

The paper's generator "is pretrained on task-specific datasets" (Sec. 4.2; how is not
given). With ``pretrain_epochs`` the run first trains the generator as a class-conditional
GAN on the real training images: DiM's phase 1 (AC-WGAN-GP in pixel space, the project's
tested cGAN objective; :class:`CodebookPretrainTrainer`), with codes drawn from N(0, I), the
codebook's starting distribution, and the class embedding of the condensation. That stage has
its own folder (``OUTPUT_DIR/pretrain``) and exact resume; condensation then starts from its
generator (as from an ``init_generator``), and ``code_init`` fits only the codes to their real
images.

Beyond the paper, ``nested``: every step also applies the losses to the first n codes
(one n drawn uniformly or log-uniformly from 1..K-1, or every n: ``nested_prefixes``), so
that the first n codes of one codebook form a good n-per-class set for every n <= K; beyond
K the generator draws codes around the learned ones (see :mod:`gencond.models.codebook`).
``codes_per_step`` bounds what a step generates as K grows: each prefix's losses see at
most that many of its codes, drawn at random, as a minibatch of the set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from gencond.artifacts import check_compatible
from gencond.augment import DEFAULT_STRATEGY, DSA
from gencond.data import ClassSampler, ImageSet
from gencond.engine.networks import (
    RealBatchConfig,
    RealBatchTrainer,
)
from gencond.errors import GencondError
from gencond.losses.adversarial import (
    feature_discriminator_loss,
    feature_generator_loss,
)
from gencond.losses.codebook import (
    feature_matching_loss,
    inter_class_loss,
    intra_class_loss,
)
from gencond.methods._registry import get_method, register_method
from gencond.methods.coresets import SelectionConfig, embedding_network
from gencond.methods.dim import DiMConfig, DiMTrainer
from gencond.models import ModelPool, check_architecture, create_network, load_generator
from gencond.models.codebook import BACKBONES, CodebookGenerator, FeatureDiscriminator
from gencond.models.gan import DiMDiscriminator
from gencond.training.trainer import (
    GeneratorConfig,
    GeneratorTrainer,
    reusable_generator,
    run_trainer,
    saved_state,
)

CLASS_EMBEDDINGS = ("class_feature", "online_feature", "one_hot")
NESTED_PREFIXES = ("random", "log", "all")


@dataclass
class CodebookConfig(GeneratorConfig):
    """Every default of a codebook-generator run (paper settings unless the help says
    why another value was chosen where the paper is silent)."""

    output_dir: str = field(default="runs/codebook", metadata={"help": "checkpoints, sample grids, log, generator"})
    epochs: int = field(default=100, metadata={"help": "epochs (paper: silent; linear lr decay to 0 over them)"})
    # the condensed format
    codebook_size: int = field(default=10, metadata={"help": "K: codes, i.e. images per class, of the codebook"})
    code_dim: int = field(default=64, metadata={"help": "C (paper: silent; 64 = half the class embedding + code input of 128)"})
    embed_dim: int = field(default=64, metadata={"help": "projected class embedding size (silent; balanced with C, as the paper asks)"})
    width: int = field(default=128, metadata={"help": "decoder channels (silent; the ConvNet width)"})
    backbone: str = field(default="blocks", metadata={"help": "blocks (paper decoder) or dim (DiM's generator body)"})
    extra_code_spread: float = field(default=0.5, metadata={
        "help": "codes beyond K: a learned code + N(0, (spread x codebook std)^2) noise (beyond the paper)"})
    class_embedding: str = field(default="class_feature", metadata={"help": "class_feature (paper), online_feature, one_hot"})
    feature_net: str = field(default="convnet3", metadata={"help": "network trained on the real data whose pooled features give the class features"})
    feature_net_epochs: int = field(default=5, metadata={"help": "its training epochs (silent; 'well-trained')"})
    class_feature_images: int = field(default=500, metadata={"help": "real images per class averaged into its feature (0 = all)"})
    init_generator: str = field(default="", metadata={
        "help": "generator folder to start from (the paper pretrains G): a codebook generator of the same shape, or "
                "a DiM/cGAN generator_phase1 with backbone: dim"})
    pretrain_epochs: int = field(default=0, metadata={
        "help": "epochs the generator first trains as a class-conditional GAN on the real data (the paper pretrains "
                "G, without saying how: DiM's AC-WGAN-GP in pixel space, codes from N(0, I)) in OUTPUT_DIR/pretrain; "
                "0 = off (one epoch lost at equal time on MNIST: experiments/codebook_pretrain/)"})
    pretrain_batch_size: int = field(default=64, metadata={"help": "its real batch (DiM's B = 64)"})
    pretrain_lr: float = field(default=1e-4, metadata={"help": "its Adam learning rate for G and the critic "
                                                               "(DiM's 1e-4, betas 0 / 0.9, gradient penalty 10)"})
    code_init: str = field(default="", metadata={
        "help": "a selection method (random, herding, kmeans, kcenter) whose K real images per class the codes "
                "first reproduce, in its order, before condensation (beyond the paper, which starts Z at random; "
                "DM and IDC start from real images); '' = off"})
    code_init_steps: int = field(default=100, metadata={"help": "Adam steps fitting G(Z) to those images (MSE)"})
    code_init_lr: float = field(default=1e-3, metadata={"help": "their learning rate"})
    # optimisation
    lr_codebook: float = field(default=0.01, metadata={"help": "SGD lr of Z (paper 0.01)"})
    lr_generator: float = field(default=0.001, metadata={"help": "SGD lr of G (paper 0.001)"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum of Z and G (silent; 0.9 as the evaluation)"})
    lr_discriminator: float = field(default=2e-4, metadata={"help": "Adam lr of D (silent; DCGAN's 2e-4, betas 0.5/0.999)"})
    classes_per_step: int = field(default=0, metadata={"help": "classes a step generates (0 = all; ImageNet: a subset)"})
    association_size: int = field(default=64, metadata={"help": "real images per class in a step's association (silent)"})
    dsa_strategy: str = field(default=DEFAULT_STRATEGY, metadata={
        "help": "per-class siamese DSA of real and generated images before phi (CAFE/DM practice; 'none' = off)"})
    dsa_mode: str = field(default="dsa", metadata={"help": "dsa (one operation per draw) or idc"})
    # the feature network phi
    phi_pool: list[str] = field(default_factory=lambda: ["convnet3"], metadata={"help": "ConvNets phi is drawn from (paper: ConvNet-3; ConvNet-4 at 64x64)"})
    phi_training: RealBatchConfig = field(default_factory=lambda: RealBatchConfig(batches=1, batch_size=128, dsa_strategy="none"),
                                          metadata={"help": "phi's cross-entropy training on real batches per update (paper lr 0.01)"})
    generator_steps_per_phi_update: int = field(default=1, metadata={"help": "M of Algorithm 1 (silent)"})
    phi_reinit_every: int = field(default=100, metadata={
        "help": "N of Algorithm 1: phi updates between re-initialisations (silent; phi goes from random to trained, as DiM's pool within an epoch)"})
    # losses (Table 8); 0 switches a term off
    gan_weight: float = field(default=1.0, metadata={"help": "L_GAN = L_adv + L_c on phi's features"})
    feature_weight: float = field(default=1.0, metadata={"help": "L_f"})
    intra_weight: float = field(default=1.0, metadata={"help": "L_intra"})
    inter_weight: float = field(default=1.0, metadata={"help": "L_inter"})
    temperature: float = field(default=0.1, metadata={"help": "tau of L_intra (silent; the usual InfoNCE value on unit features)"})
    margin: float = field(default=1.0, metadata={
        "help": "tau_m of L_inter on unit features (silent; orthogonal class means of spread samples lie ~1.1-1.4 apart)"})
    soft_labels: bool = field(default=False, metadata={"help": "L_c on the feature net's class-mean softmax (paper: ImageNet-1K only)"})
    nested: bool = field(default=False, metadata={"help": "also apply the losses to prefixes of the codes (beyond the paper)"})
    nested_prefixes: str = field(default="random", metadata={
        "help": "random: the full set and one prefix n < K drawn uniformly, averaged; log: the same with n drawn "
                "log-uniformly (as many small prefixes as large ones per octave, for large K); all: every prefix "
                "1..K, averaged"})
    codes_per_step: int = field(default=0, metadata={
        "help": "codes per class a loss group of a step sees (0 = all of its prefix): a prefix longer than this "
                "sees that many of its codes drawn at random, so a step's cost stays bounded as K grows (beyond "
                "the paper)"})

    def check(self) -> None:
        super().check()
        for name in ("epochs", "codebook_size", "code_dim", "embed_dim", "width", "association_size",
                     "generator_steps_per_phi_update", "phi_reinit_every"):
            if getattr(self, name) <= 0:
                raise GencondError(f"{name} must be positive, got {getattr(self, name)}")
        if min(self.classes_per_step, self.class_feature_images, self.feature_net_epochs, self.codes_per_step) < 0:
            raise GencondError("classes_per_step, class_feature_images, feature_net_epochs and codes_per_step "
                               "must be >= 0")
        if self.backbone not in BACKBONES:
            raise GencondError(f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        if self.class_embedding not in CLASS_EMBEDDINGS:
            raise GencondError(f"unknown class_embedding {self.class_embedding!r}; choose one of {', '.join(CLASS_EMBEDDINGS)}")
        if self.nested_prefixes not in NESTED_PREFIXES:
            raise GencondError(f"unknown nested_prefixes {self.nested_prefixes!r}; choose one of {', '.join(NESTED_PREFIXES)}")
        if min(self.gan_weight, self.feature_weight, self.intra_weight, self.inter_weight) < 0:
            raise GencondError("loss weights must be >= 0")
        if self.temperature <= 0:
            raise GencondError(f"temperature must be positive, got {self.temperature}")
        if not self.phi_pool:
            raise GencondError("phi_pool needs at least one network")
        for name in [self.feature_net, *self.phi_pool]:
            check_architecture(name)
            if not name.startswith("convnet"):
                raise GencondError(f"{name}: phi and the feature net must be ConvNets (convnet3, convnet4, ..._bn): "
                                   "feature matching reads every block's output")
        DSA(self.dsa_strategy, self.dsa_mode)
        self.phi_training.check(self.dsa_mode)
        if self.code_init:
            get_method(self.code_init, kind="selection")
        if self.code_init_steps <= 0 or self.code_init_lr <= 0:
            raise GencondError("code_init_steps and code_init_lr must be positive")
        if self.init_generator and not Path(self.init_generator).is_dir():
            raise GencondError(f"init_generator: no generator folder at {self.init_generator}")
        if self.pretrain_epochs < 0 or self.pretrain_batch_size <= 0 or self.pretrain_lr <= 0:
            raise GencondError("pretrain_epochs must be >= 0, pretrain_batch_size and pretrain_lr positive")
        if self.pretrain_epochs and self.init_generator:
            raise GencondError("pretrain_epochs trains the generator that init_generator would load: give one of them")


def standardised(features: torch.Tensor) -> torch.Tensor:
    """Class features z-scored per dimension across classes: the projection then starts
    from what tells the classes apart, not from the mean all classes share (raw pooled
    ReLU features of different classes differ by a few percent)."""
    if len(features) < 2:
        return torch.zeros_like(features)
    return (features - features.mean(0)) / (features.std(0) + 1e-6)


def pooled_features(net, x: torch.Tensor) -> torch.Tensor:
    """The lowest-resolution feature map, spatially averaged (the paper's class feature)."""
    return net.block_outputs(x)[-1].mean((2, 3))


@torch.no_grad()
def class_statistics(net, images: ImageSet, per_class: int, seed: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class: the mean pooled feature and the mean softmax of ``net`` over (at most
    ``per_class``) real images of the class."""
    net.eval()
    sampler = ClassSampler(images, seed)
    features, probabilities = [], []
    for c in range(images.info.num_classes):
        count = per_class or int(sampler.counts[c])
        x = sampler.sample_class(c, count)
        maps = [net.block_outputs(part.to(device))[-1] for part in x.split(500)]  # one forward per chunk
        features.append(torch.cat([m.mean((2, 3)) for m in maps]).mean(0).cpu())
        logits = torch.cat([net.forward_head(m.flatten(1)) for m in maps])
        probabilities.append(F.softmax(logits, 1).mean(0).cpu())
    return torch.stack(features), torch.stack(probabilities)


def initialise_from(gen: CodebookGenerator, folder: str, info) -> list[str]:
    """Copy a saved generator's parts into ``gen`` where they fit; returns what was loaded.
    The body must fit exactly; the input layer (``fc``) and the class-embedding projection
    (``project``) are copied when their shapes match (a codebook generator of the same shape:
    everything but the codebook and the class features, which the run computes itself; a
    DiM generator: the body, and its input layer when the noise size matches). Anything else
    is one clear error."""
    source = load_generator(folder)
    check_compatible(source.info, info, folder)
    state, target = source.state_dict(), gen.state_dict()
    parts = {part: [k for k in target if k.startswith(f"{part}.")] for part in ("body", "fc", "project")}
    for key in parts["body"]:
        if key not in state or state[key].shape != target[key].shape:
            found = tuple(state[key].shape) if key in state else "nothing"
            raise GencondError(
                f"init_generator {folder} ({source.architecture}) does not fit: {key} is {found} there, this generator "
                f"needs {tuple(target[key].shape)} (backbone {gen.config.backbone}, width {gen.width}); "
                "a DiM generator fits backbone: dim with its width")
    loaded = ["body"] + [part for part in ("fc", "project")
                         if all(k in state and state[k].shape == target[k].shape for k in parts[part])]
    gen.load_state_dict({k: state[k] for part in loaded for k in parts[part]}, strict=False)
    return loaded


def feature_net_config(cfg: CodebookConfig, device, config_class: type[SelectionConfig] = SelectionConfig
                       ) -> SelectionConfig:
    """The feature network as a selection's embedding network, so ``code_init`` ranks real
    images where the class features come from, and the network trains once per process
    (:func:`embedding_network` caches it per image set and settings)."""
    return config_class(embed_net=cfg.feature_net, embed_epochs=cfg.feature_net_epochs, device=str(device),
                        seed=cfg.seed)


def feature_dim(cfg: CodebookConfig, info) -> int:
    """The size of a class feature: C for one-hot, else the feature network's width."""
    if cfg.class_embedding == "one_hot":
        return info.num_classes
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = create_network(cfg.feature_net, info.num_classes, info.channels, info.image_size)
    probe = torch.zeros(1, info.channels, info.image_size, info.image_size)
    with torch.no_grad():
        return pooled_features(net.eval(), probe).shape[1]


def class_features(cfg: CodebookConfig, train: ImageSet, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(per-class features, per-class soft labels or None) for the configured class
    embedding. The feature network is trained only when something needs it."""
    info = train.info
    if cfg.class_embedding == "one_hot" and not cfg.soft_labels:
        return torch.eye(info.num_classes), None
    net = embedding_network(train, feature_net_config(cfg, device), cfg.seed)
    features, soft = class_statistics(net, train, cfg.class_feature_images, cfg.seed, device)
    soft = soft if cfg.soft_labels else None
    if cfg.class_embedding == "one_hot":
        return torch.eye(info.num_classes), soft
    if cfg.class_embedding == "online_feature":
        return torch.zeros_like(features), soft  # filled from phi's features as training goes
    return standardised(features), soft


def new_generator(cfg: CodebookConfig, train: ImageSet, device, start: str = "", log: Callable[[str], None] = print
                  ) -> tuple[CodebookGenerator, torch.Tensor | None]:
    """The run's generator with its class features (started from the generator folder
    ``start`` when given; one that does not fit fails before the feature network trains),
    and the per-class soft labels when ``soft_labels``."""
    info = train.info
    gen = CodebookGenerator(info.num_classes, info.channels, info.image_size, cfg.codebook_size, cfg.code_dim,
                            feature_dim(cfg, info), cfg.embed_dim, cfg.width, cfg.backbone, cfg.extra_code_spread,
                            info.to_dict())
    if start:
        loaded = initialise_from(gen, start, info)
        log(f"initialised the generator's {', '.join(loaded)} from {start}")
    features, soft = class_features(cfg, train, device)
    gen.class_features.copy_(features)
    return gen, soft


class PhiNetwork:
    """phi: trained on real batches between generator steps, re-initialised every
    ``phi_reinit_every`` updates; saved and restored with the training state. Its random
    stream is the same on every process, so phi stays identical across processes."""

    def __init__(self, cfg: CodebookConfig, train: ImageSet, device):
        self.cfg, self.train, self.device = cfg, train, device
        self.draws = self.updates = self.steps = 0
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.lr_factor = 1.0
        self.reinit()

    def reinit(self) -> None:
        info = self.train.info
        pool = ModelPool(self.cfg.phi_pool, info.num_classes, info.channels, info.image_size,
                         seed=self.cfg.seed * 7919 + self.draws)
        self.name, self.net = pool.draw()
        self.net.to(self.device)
        self.trainer = RealBatchTrainer(self.net, self.train, self.cfg.phi_training, self.cfg.dsa_mode,
                                        self.generator, self.device)
        self.trainer.set_lr_factor(self.lr_factor)
        self.draws, self.updates = self.draws + 1, 0

    def start_epoch(self, seed: int, lr_factor: float) -> None:
        """Reseed phi's random stream and scale its learning rate for the epoch."""
        self.generator.manual_seed(seed)
        self.lr_factor = lr_factor
        self.trainer.set_lr_factor(lr_factor)

    def after_generator_step(self) -> None:
        """Algorithm 1: after every M generator steps, one update of phi."""
        self.steps += 1
        if self.steps % self.cfg.generator_steps_per_phi_update == 0:
            self.trainer.update()
            self.updates += 1
            if self.updates >= self.cfg.phi_reinit_every:
                self.reinit()

    def state_dict(self) -> dict:
        return {"draws": self.draws, "updates": self.updates, "steps": self.steps, "net": self.net.state_dict(),
                "optimizer": self.trainer.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.draws = int(state["draws"]) - 1
        self.reinit()
        self.net.load_state_dict(state["net"])
        self.trainer.optimizer.load_state_dict(state["optimizer"])
        self.updates, self.steps = int(state["updates"]), int(state["steps"])


@dataclass
class StepContext:
    """What an epoch's steps draw from; seeded by (seed, epoch, rank)."""

    rng: torch.Generator
    sampler: ClassSampler
    augment: DSA


@dataclass
class StepFeatures:
    """One step's generated and real features under phi, grouped by class."""

    classes: torch.Tensor  # (n,)
    slots: torch.Tensor  # (u,) the codes generated for every class, ascending
    fake_layers: list[torch.Tensor]  # per block of phi: (n, u, ...)
    real_means: list[torch.Tensor]  # per block: (n, ...) association means
    real_embedding: torch.Tensor  # (n * association, D)
    centres: torch.Tensor  # (n, D) mean unit real feature per class
    real_pooled: torch.Tensor  # (n, channels) pooled lowest-resolution real feature per class
    condition: torch.Tensor  # (n, feature_dim) class features


class CodebookTrainer(GeneratorTrainer):
    """Algorithm 1 of Zhang et al. (2023) as hooks of the shared generator trainer."""

    method = "codebook"

    def __init__(self, cfg: CodebookConfig, start: str = ""):
        """``start``: the generator folder condensation starts from (``init_generator``, or
        the pretraining stage's generator)."""
        self.start = start or cfg.init_generator
        super().__init__(cfg)

    def build(self) -> dict:
        cfg, info = self.cfg, self.info
        gen, self.soft_targets = new_generator(cfg, self.train, self.device, self.start, self.accelerator.print)
        self.code_targets = self.selected_images() if cfg.code_init else None
        self.phi = PhiNetwork(cfg, self.train, self.device)
        self.accelerator.register_for_checkpointing(self.phi)
        disc = FeatureDiscriminator(self.phi.net.num_features, gen.class_features.shape[1], info.num_classes)
        rest = [p for name, p in gen.named_parameters() if name != "codebook"]
        opt_g = torch.optim.SGD([{"params": [gen.codebook], "lr": cfg.lr_codebook},
                                 {"params": rest, "lr": cfg.lr_generator}], momentum=cfg.momentum,
                                **self.optimizer_options)
        opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr_discriminator, betas=(0.5, 0.999), **self.optimizer_options)
        return {"gen": gen, "disc": disc, "opt_g": opt_g, "opt_d": opt_d}

    def selected_images(self) -> torch.Tensor:
        """(classes, K, channels, H, W): the ``code_init`` method's K real training images of
        every class in the generator's range, in the method's order (herding's greedy order
        makes the first n of them a good n-image set, as nested codes want)."""
        cfg, k = self.cfg, self.cfg.codebook_size
        method = get_method(cfg.code_init, kind="selection")
        indices = method.fn(self.train, k, cfg.seed, feature_net_config(cfg, self.device, method.config))
        labels = self.train.labels[indices]
        indices = indices[torch.argsort(labels, stable=True)]  # class by class, each in the method's order
        images = self.info.to_generator_range(self.train.images(indices))
        return images.view(self.info.num_classes, k, *images.shape[1:])

    def before_training(self) -> None:
        """``code_init``: (Z, G) first fit code k of every class to that class's k-th
        selected image (MSE in the generator's range, Adam, the whole codebook per step);
        only Z when the generator starts trained (``init_generator`` or pretraining), so
        the fit finds codes for the images instead of retraining the generator."""
        if self.code_targets is None:
            return
        cfg, c, k = self.cfg, self.info.num_classes, self.cfg.codebook_size
        target = self.code_targets.flatten(0, 1).to(self.device)
        slots = torch.arange(k, device=self.device).repeat(c)
        labels = torch.arange(c, device=self.device).repeat_interleave(k)
        fitted = [self.raw_gen.codebook] if self.start else list(self.gen.parameters())
        optimizer = torch.optim.Adam(fitted, lr=cfg.code_init_lr)
        self.gen.train()
        for _ in range(cfg.code_init_steps):
            with self.accelerator.autocast():
                loss = F.mse_loss(self.generate(slots, labels).float(), target)
            optimizer.zero_grad(set_to_none=True)
            self.accelerator.backward(loss)
            optimizer.step()
        what = "codes" if self.start else "codes and generator"
        self.accelerator.print(f"{what} fitted to {cfg.code_init} images: MSE {loss.item():.4f} "
                               f"after {cfg.code_init_steps} steps")

    def header(self) -> str:
        cfg = self.cfg
        return (f"{super().header()}, K = {cfg.codebook_size} codes, {cfg.epochs} epochs, "
                f"class embedding {cfg.class_embedding}, nested {cfg.nested}")

    def start_epoch(self, epoch: int) -> tuple[StepContext, range]:
        cfg = self.cfg
        factor = 1.0 - epoch / cfg.epochs  # the paper's linear epoch decay
        self.opt_g.param_groups[0]["lr"] = cfg.lr_codebook * factor
        self.opt_g.param_groups[1]["lr"] = cfg.lr_generator * factor
        self.phi.start_epoch(cfg.seed * 1_000_003 + epoch * 101 + 7, factor)
        rng = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch * 101 + self.rank)
        ctx = StepContext(rng, ClassSampler(self.train, generator=rng), DSA(cfg.dsa_strategy, cfg.dsa_mode, generator=rng))
        classes = self.classes_per_step()
        steps = cfg.steps_per_epoch or max(1, len(self.train) // (cfg.association_size * classes * self.world))
        return ctx, range(steps)

    def describe(self, ctx: StepContext) -> dict:
        return {"phi_draws": self.phi.draws}

    def context_state(self, ctx: StepContext) -> dict:
        """Also phi's random stream, which :meth:`start_epoch` reseeds every epoch."""
        return {**super().context_state(ctx), "phi_rng": self.phi.generator.get_state()}

    def load_context_state(self, ctx: StepContext, state: dict) -> None:
        super().load_context_state(ctx, state)
        self.phi.generator.set_state(state["phi_rng"])

    def classes_per_step(self) -> int:
        c, wanted = self.info.num_classes, self.cfg.classes_per_step
        return c if wanted == 0 or wanted >= c else wanted

    def step_classes(self, rng: torch.Generator) -> torch.Tensor:
        c, n = self.info.num_classes, self.classes_per_step()
        return torch.arange(c) if n == c else torch.randperm(c, generator=rng)[:n].sort().values

    def features(self, ctx: StepContext, classes: torch.Tensor, slots: torch.Tensor) -> StepFeatures:
        """Generate the codes ``slots`` of every class and draw each class's association;
        both go through one siamese DSA draw per class, then through phi (no gradient to phi)."""
        cfg, device, n = self.cfg, self.device, len(classes)
        k, a = len(slots), cfg.association_size
        real = ctx.sampler.sample_aligned(classes.repeat_interleave(a), device)
        classes = classes.to(device)
        fake = self.info.from_generator_range(self.generate(slots.to(device).repeat(n), classes.repeat_interleave(k)))
        draw = ctx.augment.draw_groups(n, self.info.image_size, device)
        groups = torch.arange(n, device=device)
        fake, real = draw(fake, groups.repeat_interleave(k)), draw(real, groups.repeat_interleave(a))
        phi = self.phi.net.eval().requires_grad_(False)
        with self.accelerator.autocast():
            with torch.no_grad():
                real_layers = [r.float() for r in phi.block_outputs(real)]
            fake_layers = phi.block_outputs(fake)
        real_emb = real_layers[-1].flatten(1)
        return StepFeatures(
            classes=classes,
            slots=slots,
            fake_layers=[f.float().view(n, k, *f.shape[1:]) for f in fake_layers],
            real_means=[r.view(n, a, *r.shape[1:]).mean(1) for r in real_layers],
            real_embedding=real_emb,
            centres=F.normalize(real_emb, dim=1).view(n, a, -1).mean(1),
            real_pooled=real_layers[-1].mean((2, 3)).view(n, a, -1).mean(1),
            condition=self.raw_gen.class_features[classes].detach(),
        )

    def train_step(self, ctx: StepContext, step: int) -> dict[str, torch.Tensor]:
        cfg, acc, k = self.cfg, self.accelerator, self.cfg.codebook_size
        raw_disc = acc.unwrap_model(self.disc)
        raw_disc.requires_grad_(False)
        with acc.no_sync(self.disc):  # the discriminator is only a loss here
            classes = self.step_classes(ctx.rng)
            if 0 < cfg.codes_per_step < k:  # the draws choose the codes to generate, so they come first
                groups = code_groups(self.prefix_sizes(ctx.rng), cfg.codes_per_step, ctx.rng)
                f = self.features(ctx, classes, torch.cat(groups).unique())
            else:  # every code; the prefix draw follows the features (the shipped checkpoints' random stream)
                f = self.features(ctx, classes, torch.arange(k))
                groups = [torch.arange(size) for size in self.prefix_sizes(ctx.rng)]
            parts = mean_parts([self.condensation_losses(f, torch.searchsorted(f.slots, g)) for g in groups])
            self.opt_g.zero_grad(set_to_none=True)
            acc.backward(sum(parts.values()))
        self.opt_g.step()
        raw_disc.requires_grad_(True)
        self.ema_step()
        losses = {name: value.detach() for name, value in parts.items()}
        if cfg.gan_weight > 0:
            losses.update(self.discriminator_step(f))
        if cfg.class_embedding == "online_feature":
            with torch.no_grad():
                self.raw_gen.class_features[f.classes] = standardised(f.real_pooled)
        self.phi.after_generator_step()
        return losses

    def prefix_sizes(self, rng: torch.Generator) -> list[int]:
        """The code prefixes whose losses a step averages: K alone, or with ``nested`` the
        prefixes of :func:`prefix_sizes`."""
        k = self.cfg.codebook_size
        return prefix_sizes(k, self.cfg.nested_prefixes, rng) if self.cfg.nested and k > 1 else [k]

    def targets(self, classes: torch.Tensor, per_class: int) -> torch.Tensor:
        """L_c targets for generated images: class indices, or the feature net's mean
        softmax over the class's real images (soft labels)."""
        labels = classes.repeat_interleave(per_class)
        if self.soft_targets is None:
            return labels
        return self.soft_targets.to(labels.device)[labels]

    def condensation_losses(self, f: StepFeatures, positions: torch.Tensor) -> dict[str, torch.Tensor]:
        """The weighted terms of L_con on the generated codes at ``positions`` of every class."""
        cfg, codes = self.cfg, len(positions)
        positions = positions.to(f.fake_layers[0].device)
        layers = [layer[:, positions] for layer in f.fake_layers]
        embedding = layers[-1].flatten(2)
        parts = {}
        if cfg.feature_weight:
            parts["feature"] = cfg.feature_weight * feature_matching_loss(layers, f.real_means)
        if cfg.intra_weight:
            parts["intra"] = cfg.intra_weight * intra_class_loss(embedding, f.centres, cfg.temperature)
        if cfg.inter_weight:
            parts["inter"] = cfg.inter_weight * inter_class_loss(embedding, cfg.margin)
        if cfg.gan_weight:
            logit, class_logits = self.disc(embedding.flatten(0, 1), f.condition.repeat_interleave(codes, 0))
            gan = feature_generator_loss(logit, class_logits, self.targets(f.classes, codes))
            parts["g_adv"], parts["g_cls"] = cfg.gan_weight * gan["adv"], cfg.gan_weight * gan["cls"]
        return parts

    def discriminator_step(self, f: StepFeatures) -> dict[str, torch.Tensor]:
        """One step of D on real (the associations) and generated features, as one batch
        (D is per-sample)."""
        a, k = self.cfg.association_size, len(f.slots)
        fake = f.fake_layers[-1].flatten(2).flatten(0, 1).detach()
        conditions = torch.cat([f.condition.repeat_interleave(a, 0), f.condition.repeat_interleave(k, 0)])
        logit, class_logits = self.disc(torch.cat([f.real_embedding, fake]), conditions)
        r = len(f.real_embedding)
        parts = feature_discriminator_loss(logit[:r], logit[r:], class_logits[:r], class_logits[r:],
                                           f.classes.repeat_interleave(a), self.targets(f.classes, k))
        self.opt_d.zero_grad(set_to_none=True)
        self.accelerator.backward(parts["loss"])
        self.opt_d.step()
        return {("d_loss" if name == "loss" else name): value.detach() for name, value in parts.items()}


def prefix_sizes(codes: int, prefixes: str, rng: torch.Generator) -> list[int]:
    """Nested prefixes of a K-code codebook whose losses a step averages: ``random``, the
    full set and one prefix n drawn uniformly from 1..K-1; ``log``, the same with n drawn
    log-uniformly (n = floor(K^u), u ~ U[0, 1)), so INPC 1-2 weigh as much as 25-50 when K
    is 50; ``all``, every prefix 1..K, so the first code weighs in K terms (as Matryoshka
    representation learning sums over nested sizes)."""
    if prefixes == "all":
        return list(range(1, codes + 1))
    if prefixes == "log":
        return [codes, min(codes - 1, int(codes ** torch.rand(1, generator=rng).item()))]
    return [codes, int(torch.randint(1, codes, (1,), generator=rng))]


def code_groups(sizes: list[int], per_step: int, rng: torch.Generator) -> list[torch.Tensor]:
    """The codes each prefix's losses see: all of a prefix up to ``per_step`` codes, else
    ``per_step`` of them drawn without replacement (ascending), as a minibatch of the set."""
    return [torch.randperm(size, generator=rng)[:per_step].sort().values if size > per_step else torch.arange(size)
            for size in sizes]


def mean_parts(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Every loss term averaged over the step's loss groups."""
    return {name: sum(p[name] for p in parts) / len(parts) for name in parts[0]}


PRETRAIN_DIR = "pretrain"


class CodebookPretrainTrainer(DiMTrainer):
    """The pretraining stage: DiM's GAN phase (:class:`~gencond.methods.dim.DiMTrainer`'s
    steps, with ``noise_dim`` = the code size) training the codebook run's generator, codes
    drawn from N(0, I); the codebook itself takes no part."""

    method = "codebook_pretrain"

    def __init__(self, cfg: DiMConfig, codebook: CodebookConfig):
        self.codebook_cfg = codebook
        super().__init__(cfg)

    def build(self) -> dict:
        cfg, info = self.cfg, self.info
        gen, _ = new_generator(self.codebook_cfg, self.train, self.device, log=self.accelerator.print)
        gen.codebook.requires_grad_(False)
        disc = DiMDiscriminator(info.num_classes, info.channels, info.image_size, cfg.width, cfg.leaky_slope)
        opt_g = torch.optim.Adam([p for p in gen.parameters() if p.requires_grad], lr=cfg.lr,
                                 betas=(cfg.beta1, cfg.beta2), **self.optimizer_options)
        opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **self.optimizer_options)
        return {"gen": gen, "disc": disc, "opt_g": opt_g, "opt_d": opt_d}

    def header(self) -> str:
        return f"codebook generator pretraining on {self.info.name}: {self.cfg.gan_epochs} GAN epochs"


def pretrain_config(cfg: CodebookConfig) -> DiMConfig:
    """The pretraining stage's config: the run's data and run settings (every
    :class:`GeneratorConfig` field but the output folder and the model selection), DiM's
    GAN phase at ``pretrain_epochs``, ``pretrain_batch_size`` and ``pretrain_lr``."""
    shared = {f.name: getattr(cfg, f.name) for f in fields(GeneratorConfig)}
    return replace(DiMConfig(), **{**shared, "output_dir": str(Path(cfg.output_dir) / PRETRAIN_DIR),
                                   "select_by": "last", "keep_every": 0}, width=cfg.width, noise_dim=cfg.code_dim,
                   batch_size=cfg.pretrain_batch_size, lr=cfg.pretrain_lr, gan_epochs=cfg.pretrain_epochs,
                   match_epochs=0)


def train_codebook(cfg: CodebookConfig, resume: bool = False) -> Path:
    """Run the codebook-generator method; returns the folder of the saved generator. With
    ``pretrain_epochs`` the pretraining stage runs first (or resumes, or is reused when it
    finished), then condensation starts from its generator; ``resume`` continues whichever
    stage a stopped run was in."""
    if not cfg.pretrain_epochs:
        return run_trainer(CodebookTrainer, cfg, resume)
    cfg.check()
    stage = pretrain_config(cfg)
    folder = reusable_generator(CodebookPretrainTrainer.method, stage)
    if folder is None:
        folder = run_trainer(partial(CodebookPretrainTrainer, codebook=cfg), stage,
                             resume=resume and saved_state(stage.output_dir) is not None)
    return run_trainer(partial(CodebookTrainer, start=str(folder)), cfg,
                       resume and saved_state(cfg.output_dir) is not None)


@register_method("codebook", kind="generator", config=CodebookConfig)
def codebook(cfg: CodebookConfig, resume: bool = False) -> Path:
    """Codebook generator: codebook + generator + feature GAN + feature matching + intra/inter-class losses (Zhang et al. 2023)."""
    return train_codebook(cfg, resume)
