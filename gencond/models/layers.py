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


class InstanceNorm(nn.GroupNorm):
    """``nn.GroupNorm`` with one group per channel: instance norm with a learnable scale and
    shift, the same parameters, state-dict keys and results.

    On a channels-last map smaller than 32x32 it normalises through the free (N, H*W, C)
    view, in two passes (mean, then the centred squares), instead of ATen's channels-last
    group-norm kernel, which with one channel per group walks the channels with a stride:
    on a 2-core AVX-512 EPYC that kernel took 58 ms at 256x128x16x16 and 13 ms at 8x8
    against 3 and 1 ms for the same maps in NCHW, and the view 10 and 2 ms. From 32x32
    up ATen's kernel is the faster one (18 ms against 37). A bf16 map (autocast) takes the
    view too, with its statistics in fp32: ATen's bf16 kernel was slower still, and DM's
    real forward in bf16 only paid off through the view (experiments/speed_vs_official/)."""

    VIEW_BELOW_PIXELS = 32 * 32

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__(channels, channels, eps=eps, affine=True)

    def takes_the_view(self, x: torch.Tensor) -> bool:
        """A float or bf16 map in channels-last layout (not also NCHW-contiguous) under 32x32."""
        return (x.dim() == 4 and x.shape[2] * x.shape[3] < self.VIEW_BELOW_PIXELS
                and x.dtype in (torch.float32, torch.float64, torch.bfloat16)
                and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.takes_the_view(x):
            return super().forward(x)
        n, c, h, w = x.shape
        pixels = x.permute(0, 2, 3, 1).reshape(n, h * w, c)  # a view: no copy for channels-last
        if pixels.dtype == torch.bfloat16:
            pixels = pixels.float()  # statistics in fp32
        centred = pixels - pixels.mean(1, keepdim=True)
        scale = self.weight * torch.rsqrt(centred.square().mean(1, keepdim=True) + self.eps)
        return torch.addcmul(self.bias, centred, scale).to(x.dtype).view(n, h, w, c).permute(0, 3, 1, 2)


def make_norm(kind: str, channels: int, spatial: int | None = None) -> nn.Module:
    """Normalization layer by name.

    ``instance`` is the dataset-condensation convention: GroupNorm with one group per
    channel and an affine transform, i.e. instance norm with learnable scale and shift.
    ``layer`` normalizes over [C, H, W] with a per-element affine, and needs ``spatial``.
    """
    if kind == "instance":
        return InstanceNorm(channels)
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
