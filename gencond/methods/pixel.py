"""What the pixel-space methods (DM, DC/DSA, IDC) share: their common settings, the
initial synthetic set, the image optimiser, and the loop that reports progress.

The synthetic images are the learned parameters, held in the dataset's normalized space
and ordered class-major (the ``ipc`` images of class 0, then class 1, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from gencond.artifacts import CondensedSet
from gencond.augment import DEFAULT_STRATEGY, DSA
from gencond.data import ClassSampler, ImageSet
from gencond.errors import GencondError
from gencond.methods._registry import get_method, list_methods
from gencond.methods.base import CondenseConfig
from gencond.models import ModelPool, check_architecture

INITS = ("real", "noise")  # plus any selection method name


@dataclass
class PixelConfig(CondenseConfig):
    """Settings every pixel method has (each method's config overrides the defaults)."""

    iterations: int = field(default=1000, metadata={"help": "outer iterations (image updates for DM)"})
    lr_img: float = field(default=0.1, metadata={"help": "SGD learning rate of the synthetic images"})
    momentum_img: float = field(default=0.5, metadata={"help": "SGD momentum of the synthetic images"})
    batch_real: int = field(default=256, metadata={"help": "real images per class per matching step"})
    init: str = field(default="real", metadata={"help": "real (random real images), noise, or a selection method "
                                                        "(herding, kcenter, kmeans: DC-BENCH's KMeans-emb init)"})
    net: str = field(default="convnet3", metadata={"help": "matching network (a fresh one every iteration); "
                                                           "convnet3_bn for the batch-norm variant"})
    dsa_strategy: str = field(default=DEFAULT_STRATEGY, metadata={"help": "siamese augmentation ('none' = off)"})
    dsa_mode: str = field(default="dsa", metadata={"help": "dsa (one operation per draw) or idc"})
    channels_last: bool = field(default=True, metadata={"help": "NHWC networks and real batches (faster convolutions)"})
    log_every: int = field(default=100, metadata={"help": "iterations between progress lines"})

    def check(self) -> None:
        super().check()
        for name in ("iterations", "batch_real"):
            if getattr(self, name) <= 0:
                raise GencondError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lr_img <= 0:
            raise GencondError(f"lr_img must be positive, got {self.lr_img}")
        if self.init not in INITS and self.init not in list_methods("selection"):
            raise GencondError(f"unknown init {self.init!r}; choose one of {', '.join(INITS + tuple(list_methods('selection')))}")
        check_architecture(self.net)
        DSA(self.dsa_strategy, self.dsa_mode)


def class_major_labels(num_classes: int, ipc: int) -> torch.Tensor:
    return torch.arange(num_classes).repeat_interleave(ipc)


def initial_images(cfg: PixelConfig, train: ImageSet, ipc: int | None = None) -> torch.Tensor:
    """``ipc`` starting images per class, class-major, in normalized space: random real
    images, N(0, 1) noise (the DC/DM code's noise), or a selection method's picks."""
    ipc = cfg.ipc if ipc is None else ipc
    info = train.info
    if cfg.init == "noise":
        generator = torch.Generator().manual_seed(cfg.seed)
        return torch.randn(info.num_classes * ipc, info.channels, info.image_size, info.image_size, generator=generator)
    selection = get_method("random" if cfg.init == "real" else cfg.init, kind="selection")
    indices = selection.fn(train, ipc, cfg.seed, None)
    return train.images(indices)


def network_pool(cfg: PixelConfig, info) -> ModelPool:
    """Fresh matching networks, one per draw, reproducible from the seed."""
    return ModelPool([cfg.net], info.num_classes, info.channels, info.image_size, seed=cfg.seed)


class ImageTrainer:
    """The synthetic images, their SGD optimiser, and the real data they are matched to."""

    def __init__(self, cfg: PixelConfig, train: ImageSet, device: torch.device, images: torch.Tensor | None = None,
                 lr: float | None = None):
        self.cfg, self.train, self.info, self.device = cfg, train, train.info, device
        start = initial_images(cfg, train) if images is None else images
        self.images = start.to(device).requires_grad_(True)
        self.labels = class_major_labels(self.info.num_classes, len(start) // self.info.num_classes).to(device)
        self.optimizer = torch.optim.SGD([self.images], lr=cfg.lr_img if lr is None else lr, momentum=cfg.momentum_img)
        self.rng = torch.Generator().manual_seed(cfg.seed)
        self.sampler = ClassSampler(train, generator=self.rng)
        self.augment = DSA(cfg.dsa_strategy, cfg.dsa_mode, generator=self.rng)
        self.networks = network_pool(cfg, self.info)
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format

    def real_batch(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` (default ``batch_real``) real images of every class, grouped by class; as
        many from each class as the smallest class has, if that is fewer."""
        n = min(n or self.cfg.batch_real, int(self.sampler.counts.min()))
        x, y = self.sampler.sample(torch.arange(self.info.num_classes), n)
        return x.to(self.device).contiguous(memory_format=self.memory_format), y.to(self.device)

    def fresh_network(self) -> torch.nn.Module:
        return self.networks.draw()[1].to(self.device, memory_format=self.memory_format)

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def result(self, method: str, extra: dict | None = None) -> CondensedSet:
        return CondensedSet(self.images.detach().cpu(), self.labels.cpu(), self.info, method=method,
                            config={**asdict(self.cfg), **(extra or {})})


def run_iterations(cfg: PixelConfig, name: str, iteration: Callable[[int], float], log=print) -> list[float]:
    """Call ``iteration(i)`` for every iteration with a progress bar; returns the losses."""
    from tqdm.auto import tqdm

    losses = []
    bar = tqdm(range(cfg.iterations), desc=name, leave=False)
    for i in bar:
        losses.append(iteration(i))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if cfg.log_every and ((i + 1) % cfg.log_every == 0 or i + 1 == cfg.iterations):
            recent = losses[-cfg.log_every:]
            log(f"{name} iteration {i + 1}/{cfg.iterations}: loss {sum(recent) / len(recent):.4f}")
    return losses
