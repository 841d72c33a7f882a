"""Building blocks shared by the condensation networks."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gencond.errors import GencondError

NORMS = ("instance", "batch", "group", "layer", "none")

# Keyword arguments that timm.create_model passes to every entrypoint; our networks
# have no pretrained weights, so these are dropped (and `pretrained=True` refused).
_TIMM_ONLY_KWARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def make_norm(kind: str, channels: int, spatial: int | None = None) -> nn.Module:
    """Normalization layer by name.

    ``instance`` is the dataset-condensation convention: GroupNorm with one group per
    channel and an affine transform, i.e. instance norm with learnable scale and shift.
    ``layer`` normalizes over [C, H, W] with a per-element affine, and needs ``spatial``.
    """
    if kind == "instance":
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(4, channels, affine=True)
    if kind == "layer":
        if spatial is None:
            raise ValueError("layer norm needs the spatial size")
        return nn.LayerNorm([channels, spatial, spatial], elementwise_affine=True)
    if kind == "none":
        return nn.Identity()
    raise GencondError(f"unknown norm {kind!r}; choose one of {', '.join(NORMS)}")


def image_side(img_size: int | tuple[int, int] | list[int]) -> int:
    """Square side length from an int or an (H, W) pair; condensation networks are square."""
    if isinstance(img_size, (tuple, list)):
        if len(img_size) != 2 or img_size[0] != img_size[1]:
            raise GencondError(f"only square images are supported, got img_size={tuple(img_size)}")
        return int(img_size[0])
    return int(img_size)


def entry_kwargs(pretrained: bool, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Strip the keyword arguments timm adds for pretrained weights, which we never have."""
    if pretrained:
        raise GencondError("gencond's condensation networks have no pretrained weights")
    return {k: v for k, v in kwargs.items() if k not in _TIMM_ONLY_KWARGS}


class ClassifierMixin:
    """timm's split of a classifier into features and head.

    ``forward_features`` returns the flattened embedding (the layer before the linear
    head, which distribution matching and feature matching use) and
    ``forward_head(x, pre_logits=True)`` returns it unchanged, so code that embeds
    images works the same for these networks and for any other timm model.
    """

    num_classes: int
    num_features: int
    head: nn.Module

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
