"""ConvNet: the standard network of DC, DSA, DM and IDC.

Each block is a 3x3 convolution (width 128), a normalization layer (instance norm with
an affine transform by default), ReLU and 2x2 average pooling; a linear head follows the
flattened features. 28x28 inputs are padded to 32x32 by the first convolution, as the
reference code does, so MNIST-sized and CIFAR-sized images give the same feature size.
"""

from __future__ import annotations

import torch
from timm.models import register_model
from torch import nn

from gencond.models.layers import ClassifierMixin, entry_kwargs, image_side, make_norm

_POOLS = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}
_ACTS = {"relu": lambda: nn.ReLU(inplace=True), "leakyrelu": nn.LeakyReLU, "sigmoid": nn.Sigmoid, "swish": nn.SiLU}


class ConvNet(ClassifierMixin, nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        img_size: int = 32,
        width: int = 128,
        depth: int = 3,
        norm: str = "instance",
        act: str = "relu",
        pool: str = "avg",
    ):
        super().__init__()
        side = image_side(img_size)
        first_pad = 3 if side == 28 else 1
        side = side + 2 * first_pad - 2
        layers: list[nn.Module] = []
        channels = in_chans
        for d in range(depth):
            layers.append(nn.Conv2d(channels, width, 3, padding=first_pad if d == 0 else 1))
            layers.append(make_norm(norm, width, side))
            layers.append(_ACTS[act]())
            if pool != "none":
                layers.append(_POOLS[pool](2, 2))
                side //= 2
            channels = width
        self.features = nn.Sequential(*layers)
        self.depth = depth
        self.num_classes = num_classes
        self.num_features = width * side * side
        self.head = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def block_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output map of every block (conv, norm, activation, pooling): the layers
        whose features the codebook generator's feature matching compares."""
        outputs, per_block = [], len(self.features) // self.depth
        for start in range(0, len(self.features), per_block):
            x = self.features[start:start + per_block](x)
            outputs.append(x)
        return outputs


@register_model
def convnet3(pretrained: bool = False, **kwargs) -> ConvNet:
    """ConvNet-3, instance norm: the DC/DSA/DM/IDC default."""
    return ConvNet(**{"depth": 3, **entry_kwargs(pretrained, kwargs)})


@register_model
def convnet4(pretrained: bool = False, **kwargs) -> ConvNet:
    """ConvNet-4, instance norm (the usual choice for 64x64 images)."""
    return ConvNet(**{"depth": 4, **entry_kwargs(pretrained, kwargs)})


@register_model
def convnet3_bn(pretrained: bool = False, **kwargs) -> ConvNet:
    """ConvNet-3 with batch norm."""
    return ConvNet(**{"depth": 3, "norm": "batch", **entry_kwargs(pretrained, kwargs)})


@register_model
def convnet4_bn(pretrained: bool = False, **kwargs) -> ConvNet:
    """ConvNet-4 with batch norm."""
    return ConvNet(**{"depth": 4, "norm": "batch", **entry_kwargs(pretrained, kwargs)})
