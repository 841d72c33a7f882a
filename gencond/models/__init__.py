"""The network zoo: dataset-condensation architectures registered in timm's registry.

Importing this package registers them, so ``timm.create_model("convnet3", num_classes=10,
in_chans=1, img_size=28)`` works like any timm model. :func:`create_network` adds one
clear error for unknown names and accepts every other timm model name unchanged.
"""

from __future__ import annotations

import random

import timm
import torch
from torch import nn

from gencond.errors import GencondError
from gencond.models import (  # noqa: F401  (registration)
    alexnet,
    cells,
    codebook,
    convnet,
    densenet,
    diffusion,
    gan,
    mlp,
    resnet,
    vgg,
)
from gencond.models.codebook import CodebookGenerator
from gencond.models.diffusion import DiffusionGenerator
from gencond.models.gan import DiMGenerator
from gencond.models.generators import (
    ConditionalGenerator,
    load_generator,
    read_generator_config,
)

GENCOND_NETWORKS = tuple(
    sorted(
        name
        for module in (alexnet, cells, convnet, densenet, mlp, resnet, vgg)
        for name in module.__all__
        if timm.is_model(name)
    )
)


def check_architecture(name: str) -> None:
    if not timm.is_model(name):
        raise GencondError(
            f"unknown architecture {name!r}; gencond's networks are {', '.join(GENCOND_NETWORKS)} "
            "(any timm model name works too)"
        )


def create_network(name: str, num_classes: int, in_chans: int, img_size: int, **kwargs) -> nn.Module:
    """A freshly initialised network by timm name, sized for the dataset.

    gencond's own networks take ``img_size``; other timm models get it only if their
    constructor accepts it (vision transformers do, most CNNs do not).
    """
    check_architecture(name)
    try:
        return timm.create_model(name, num_classes=num_classes, in_chans=in_chans, img_size=img_size, **kwargs)
    except TypeError:
        if name in GENCOND_NETWORKS:
            raise
        return timm.create_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)


def embed(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The features a network gives before its linear head (timm's pre-logits)."""
    return net.forward_head(net.forward_features(x), pre_logits=True)


def has_batch_norm(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


class ModelPool:
    """Freshly initialised networks drawn at random from a list of names.

    Draws are reproducible: the pool's seed fixes both which name is drawn and the
    initial weights of every network it returns.
    """

    def __init__(self, names: list[str], num_classes: int, in_chans: int, img_size: int, seed: int = 0, **kwargs):
        if not names:
            raise GencondError("a model pool needs at least one architecture name")
        for name in names:
            check_architecture(name)
        self.names = list(names)
        self.network_args = dict(num_classes=num_classes, in_chans=in_chans, img_size=img_size, **kwargs)
        self._rng = random.Random(seed)

    def draw(self) -> tuple[str, nn.Module]:
        name = self._rng.choice(self.names)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._rng.getrandbits(63))
            net = create_network(name, **self.network_args)
        return name, net


__all__ = ["GENCOND_NETWORKS", "CodebookGenerator", "ConditionalGenerator", "DiffusionGenerator", "DiMGenerator",
           "ModelPool",
           "check_architecture", "create_network", "embed", "has_batch_norm", "load_generator", "read_generator_config"]
