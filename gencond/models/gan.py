"""The conditional GAN of DiM (Wang, Gu et al. 2023, supplement Fig. 4 and official code).

Generator: FC (noise -> width x 4 x 4), BN, ReLU; then transposed-conv upsamplings (x2)
and 3x3 conv-BN-ReLU blocks; a final 3x3 conv to the image channels and tanh. With the
defaults (width 196, noise 100) at 32x32 this is the published network:

    FC-BN-ReLU | ConvT-BN-ReLU (4->8) | 3 x Conv-BN-ReLU | ConvT-BN-ReLU (8->16)
    | Conv-BN-ReLU | ConvT-BN-ReLU (16->32) | Conv | tanh

For 28x28 the first transposed conv has kernel 3 (4 -> 7); for 64x64 one more
Conv-BN-ReLU + ConvT-BN-ReLU stage is added (32 -> 64).

Discriminator (auxiliary-classifier critic): 3x3 convs of the same width, each followed by
layer norm over [C, H, W] and LeakyReLU, downsampling by stride 2 until 4x4; 4x4 max-pool;
two linear heads: a real/fake score (Wasserstein critic, no sigmoid) and class logits.

Label conditioning: the one-hot label either overwrites the first C noise entries (the
official code; needs noise size > classes) or is concatenated to the noise (the paper's
equation 4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config
from torch import nn

from gencond.errors import GencondError
from gencond.models.generators import ConditionalGenerator, register_generator

SUPPORTED_SIZES = (28, 32, 64)
CONDITIONING = ("overwrite", "concat")


def _check_size(image_size: int) -> None:
    if image_size not in SUPPORTED_SIZES:
        raise GencondError(f"the DiM GAN supports image sizes {SUPPORTED_SIZES}, got {image_size}")


def _conv_bn_relu(width: int) -> list[nn.Module]:
    return [nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]


def _up_bn_relu(width: int, kernel: int = 4) -> list[nn.Module]:
    return [nn.ConvTranspose2d(width, width, kernel, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]


def input_projection(in_dim: int, width: int) -> nn.Sequential:
    """FC from the generator input to a width x 4 x 4 map (flattened), BN, ReLU."""
    return nn.Sequential(nn.Linear(in_dim, width * 16), nn.BatchNorm1d(width * 16), nn.ReLU(inplace=True))


def dim_generator_body(width: int, channels: int, image_size: int) -> nn.Sequential:
    """DiM's generator after the input FC: a width x 4 x 4 map to an image in [-1, 1]."""
    _check_size(image_size)
    layers = _up_bn_relu(width, 3 if image_size == 28 else 4)
    layers += [m for _ in range(3) for m in _conv_bn_relu(width)]
    layers += _up_bn_relu(width) + _conv_bn_relu(width) + _up_bn_relu(width)
    if image_size == 64:
        layers += _conv_bn_relu(width) + _up_bn_relu(width)
    layers += [nn.Conv2d(width, channels, 3, padding=1), nn.Tanh()]
    return nn.Sequential(*layers)


@register_generator("dim_generator")
class DiMGenerator(ConditionalGenerator):
    """DiM's conditional generator (see the module docstring); latents are the noise vectors."""

    @register_to_config
    def __init__(
        self,
        num_classes: int,
        channels: int = 3,
        image_size: int = 32,
        width: int = 196,
        noise_dim: int = 100,
        conditioning: str = "overwrite",
        dataset: dict | None = None,
    ):
        super().__init__(num_classes, channels, image_size, dataset)
        _check_size(image_size)
        if conditioning not in CONDITIONING:
            raise GencondError(f"unknown conditioning {conditioning!r}; choose one of {', '.join(CONDITIONING)}")
        if conditioning == "overwrite" and noise_dim <= num_classes:
            raise GencondError(
                f"overwrite conditioning needs a noise size above the number of classes ({noise_dim} <= {num_classes}); "
                "use conditioning: concat or a larger noise_dim"
            )
        self.width, self.noise_dim, self.conditioning = width, noise_dim, conditioning
        self.latent_dim = noise_dim
        in_dim = noise_dim + (num_classes if conditioning == "concat" else 0)
        self.fc = input_projection(in_dim, width)
        self.body = dim_generator_body(width, channels, image_size)

    def conditioned_input(self, noise: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(labels, self.num_classes).to(noise.dtype)
        if self.conditioning == "concat":
            return torch.cat([noise, one_hot], dim=1)
        return torch.cat([one_hot, noise[:, self.num_classes:]], dim=1)

    def forward(self, noise: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] of shape (N, channels, image_size, image_size)."""
        h = self.fc(self.conditioned_input(noise, labels))
        return self.body(h.view(-1, self.width, 4, 4))


def _critic_strides(image_size: int) -> list[int]:
    """Stride per conv: 32 -> 16 -> 8 -> 4 (28 -> 14 -> 7 -> 4); 64 adds one halving."""
    strides = [1, 2, 1, 2, 1, 1, 1, 2]
    return strides[:2] + [2] + strides[2:] if image_size == 64 else strides


class DiMDiscriminator(nn.Module):
    def __init__(self, num_classes: int, channels: int = 3, image_size: int = 32, width: int = 196,
                 negative_slope: float = 0.01):
        super().__init__()
        _check_size(image_size)
        layers: list[nn.Module] = []
        side, in_ch = image_size, channels
        for stride in _critic_strides(image_size):
            side = (side - 1) // stride + 1
            layers += [nn.Conv2d(in_ch, width, 3, stride=stride, padding=1), nn.LayerNorm([width, side, side]),
                       nn.LeakyReLU(negative_slope)]
            in_ch = width
        assert side == 4, side
        layers += [nn.MaxPool2d(4), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.critic = nn.Linear(width, 1)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(critic score (N,), class logits (N, C)). Every layer is per-sample, so scoring a
        concatenation of batches equals scoring them one by one."""
        h = self.features(x)
        return self.critic(h).squeeze(1), self.classifier(h)
