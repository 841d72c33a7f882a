"""VGG-11 for 32x32 images (Simonyan & Zisserman 2015, CIFAR variant): eight 3x3
convolutions with normalization and ReLU, five 2x2 max-pools, one linear layer on the
flattened map. Instance norm by default, as in the DC/DSA/DM code; 28x28 inputs are
padded to 32x32 by the first convolution."""

from __future__ import annotations

import torch
from timm.models import register_model
from torch import nn

from gencond.models.layers import ClassifierMixin, entry_kwargs, image_side, make_norm

VGG11_LAYOUT = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(ClassifierMixin, nn.Module):
    def __init__(
        self,
        layout: tuple = VGG11_LAYOUT,
        num_classes: int = 10,
        in_chans: int = 3,
        img_size: int = 32,
        norm: str = "instance",
    ):
        super().__init__()
        side = image_side(img_size)
        first_pad = 3 if side == 28 else 1
        side += 2 * first_pad - 2
        layers: list[nn.Module] = []
        channels = in_chans
        for item in layout:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                side //= 2
                continue
            padding = first_pad if not layers else 1
            layers += [nn.Conv2d(channels, item, 3, padding=padding), make_norm(norm, item), nn.ReLU(inplace=True)]
            channels = item
        self.features = nn.Sequential(*layers)
        self.num_classes = num_classes
        self.num_features = channels * side * side
        self.head = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)


@register_model
def vgg11_cifar(pretrained: bool = False, **kwargs) -> VGG:
    """VGG-11, instance norm (the DC/DSA/DM code's ``VGG11``)."""
    return VGG(**entry_kwargs(pretrained, kwargs))


@register_model
def vgg11_cifar_bn(pretrained: bool = False, **kwargs) -> VGG:
    """VGG-11 with batch norm."""
    return VGG(**{"norm": "batch", **entry_kwargs(pretrained, kwargs)})
