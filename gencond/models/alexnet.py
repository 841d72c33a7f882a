"""AlexNet for 32x32 images, as used for cross-architecture tables in DC/DSA/DM:
five convolutions (128, 192, 256, 192, 192 channels) with ReLU and three 2x2 max-pools,
then one linear layer. 28x28 inputs are padded to 32x32 by the first convolution."""

from __future__ import annotations

import torch
from timm.models import register_model
from torch import nn

from gencond.models.layers import ClassifierMixin, entry_kwargs, image_side, make_norm


class AlexNet(ClassifierMixin, nn.Module):
    def __init__(self, num_classes: int = 10, in_chans: int = 3, img_size: int = 32, norm: str = "none"):
        super().__init__()
        side = image_side(img_size)
        first_pad = 4 if side == 28 else 2

        def block(in_ch: int, out_ch: int, kernel: int, padding: int) -> list[nn.Module]:
            return [nn.Conv2d(in_ch, out_ch, kernel, padding=padding), make_norm(norm, out_ch), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(in_chans, 128, 5, first_pad), nn.MaxPool2d(2),
            *block(128, 192, 5, 2), nn.MaxPool2d(2),
            *block(192, 256, 3, 1),
            *block(256, 192, 3, 1),
            *block(192, 192, 3, 1), nn.MaxPool2d(2),
        )
        side = (side + 2 * first_pad - 4) // 8
        self.num_classes = num_classes
        self.num_features = 192 * side * side
        self.head = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)


@register_model
def alexnet_cifar(pretrained: bool = False, **kwargs) -> AlexNet:
    """AlexNet (no normalization), the DC/DSA/DM cross-architecture network."""
    return AlexNet(**entry_kwargs(pretrained, kwargs))


@register_model
def alexnet_cifar_bn(pretrained: bool = False, **kwargs) -> AlexNet:
    """AlexNet with batch norm after every convolution (DM's ``AlexNetBN``)."""
    return AlexNet(**{"norm": "batch", **entry_kwargs(pretrained, kwargs)})
