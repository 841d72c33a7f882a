"""Three-layer perceptron (width 128, ReLU) on the flattened image."""

from __future__ import annotations

import torch
from timm.models import register_model
from torch import nn

from gencond.models.layers import ClassifierMixin, entry_kwargs, image_side


class MLP(ClassifierMixin, nn.Module):
    def __init__(self, num_classes: int = 10, in_chans: int = 3, img_size: int = 32, width: int = 128):
        super().__init__()
        side = image_side(img_size)
        self.features = nn.Sequential(
            nn.Flatten(), nn.Linear(in_chans * side * side, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU()
        )
        self.num_classes = num_classes
        self.num_features = width
        self.head = nn.Linear(width, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


@register_model
def mlp3(pretrained: bool = False, **kwargs) -> MLP:
    """MLP with two hidden layers of width 128 and a linear head."""
    return MLP(**entry_kwargs(pretrained, kwargs))
