"""DenseNet-121 for 32x32 images (Huang et al. 2017, CIFAR variant): 3x3 stem of
2 x growth channels, dense blocks of 6/12/24/16 bottleneck layers (growth 32), transitions
that halve the channels and average-pool, global average pooling, linear head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models import register_model
from torch import nn

from gencond.models.layers import ClassifierMixin, entry_kwargs, make_norm


class DenseLayer(nn.Module):
    def __init__(self, in_ch: int, growth: int, norm: str):
        super().__init__()
        self.bn1 = make_norm(norm, in_ch)
        self.conv1 = nn.Conv2d(in_ch, 4 * growth, 1, bias=False)
        self.bn2 = make_norm(norm, 4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([out, x], dim=1)


class Transition(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, norm: str):
        super().__init__(make_norm(norm, in_ch), nn.ReLU(), nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.AvgPool2d(2))


class DenseNet(ClassifierMixin, nn.Module):
    def __init__(
        self,
        blocks: tuple[int, ...] = (6, 12, 24, 16),
        growth: int = 32,
        reduction: float = 0.5,
        num_classes: int = 10,
        in_chans: int = 3,
        img_size: int = 32,
        norm: str = "batch",
    ):
        super().__init__()
        del img_size  # global pooling
        channels = 2 * growth
        layers: list[nn.Module] = [nn.Conv2d(in_chans, channels, 3, padding=1, bias=False)]
        for i, n_layers in enumerate(blocks):
            for _ in range(n_layers):
                layers.append(DenseLayer(channels, growth, norm))
                channels += growth
            if i < len(blocks) - 1:
                out_ch = int(channels * reduction)
                layers.append(Transition(channels, out_ch, norm))
                channels = out_ch
        layers += [make_norm(norm, channels), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.num_classes = num_classes
        self.num_features = channels
        self.head = nn.Linear(channels, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


@register_model
def densenet121_cifar(pretrained: bool = False, **kwargs) -> DenseNet:
    """DenseNet-121, CIFAR variant, batch norm."""
    return DenseNet(**entry_kwargs(pretrained, kwargs))
