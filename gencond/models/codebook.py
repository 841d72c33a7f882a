"""The codebook generator of Zhang et al. (2023), "Dataset Condensation via Generative
Model", and its feature-space discriminator.

Generator: a codebook Z (K x C, shared by all classes; K images per class) and a class
embedding (a projection of the class's feature, Table 6: the mean spatially pooled
lowest-resolution feature of the class's real images under a trained network; or a
one-hot vector) are concatenated and decoded. The paper's decoder (Sec. 4.2) has three
blocks for 32x32 images (four for 64x64), each two activation-conv-BN layers and an x2
upsampling, after a linear layer to a 4 x 4 map; 28x28 upsamples 4 -> 7 -> 14 -> 28.
``backbone: dim`` swaps in DiM's generator body instead, so a DiM or cGAN generator
(``generator_phase1/``) can initialise it, as the paper pretrains its generator.

Latents: slot k < K of a class is code k (the learned set); a slot beyond K, or a fresh
draw, is a learned code (k mod K, or a random one) plus Gaussian noise of
``extra_code_spread`` times the per-dimension standard deviation of the codebook, so
any number of images per class can be served from one codebook.

Discriminator (Sec. 4.2): an MLP with a sigmoid output on the features of a network,
conditioned on the class embedding by concatenation, plus a linear classification head
on the same trunk (L_c).
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import register_to_config
from torch import nn

from gencond.errors import GencondError
from gencond.models.gan import SUPPORTED_SIZES, dim_generator_body, input_projection
from gencond.models.generators import (
    ConditionalGenerator,
    gaussian_latents,
    register_generator,
)

BACKBONES = ("blocks", "dim")


def _block_sides(image_size: int) -> list[int]:
    """Map sides after each upsampling block, from 4 x 4."""
    return {28: [7, 14, 28], 32: [8, 16, 32], 64: [8, 16, 32, 64]}[image_size]


def paper_decoder(width: int, channels: int, image_size: int) -> nn.Sequential:
    """Blocks of (ReLU, 3x3 conv, BN) x 2 + upsampling, then ReLU, 3x3 conv, tanh."""
    layers: list[nn.Module] = []
    for side in _block_sides(image_size):
        for _ in range(2):
            layers += [nn.ReLU(inplace=False), nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width)]
        layers.append(nn.Upsample(size=(side, side), mode="nearest"))
    layers += [nn.ReLU(), nn.Conv2d(width, channels, 3, padding=1), nn.Tanh()]
    return nn.Sequential(*layers)


@register_generator("codebook_generator")
class CodebookGenerator(ConditionalGenerator):
    """The codebook generator (see the module docstring); latents are code vectors."""

    @register_to_config
    def __init__(
        self,
        num_classes: int,
        channels: int = 3,
        image_size: int = 32,
        codebook_size: int = 10,
        code_dim: int = 64,
        feature_dim: int = 128,
        embed_dim: int = 64,
        width: int = 128,
        backbone: str = "blocks",
        extra_code_spread: float = 0.5,
        dataset: dict | None = None,
    ):
        super().__init__(num_classes, channels, image_size, dataset)
        if image_size not in SUPPORTED_SIZES:
            raise GencondError(f"the codebook generator supports image sizes {SUPPORTED_SIZES}, got {image_size}")
        if backbone not in BACKBONES:
            raise GencondError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
        for name, value in (("codebook_size", codebook_size), ("code_dim", code_dim), ("feature_dim", feature_dim),
                            ("embed_dim", embed_dim), ("width", width)):
            if value <= 0:
                raise GencondError(f"{name} must be positive, got {value}")
        self.codebook_size, self.latent_dim, self.width = codebook_size, code_dim, width
        self.extra_code_spread = extra_code_spread
        self.codebook = nn.Parameter(torch.randn(codebook_size, code_dim))
        self.register_buffer("class_features", torch.zeros(num_classes, feature_dim))
        self.project = nn.Linear(feature_dim, embed_dim)
        in_dim = code_dim + embed_dim
        if backbone == "dim":
            self.fc = input_projection(in_dim, width)
            self.body = dim_generator_body(width, channels, image_size)
        else:
            self.fc = nn.Sequential(nn.Linear(in_dim, width * 16), nn.BatchNorm1d(width * 16))
            self.body = paper_decoder(width, channels, image_size)

    def class_embedding(self, labels: torch.Tensor) -> torch.Tensor:
        return self.project(self.class_features[labels])

    def forward(self, latents: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1]. ``latents`` are code vectors (N, C), or codebook slots
        (N,) as a long tensor: training passes slots, so the codebook is used inside
        the forward pass (data-parallel wrappers then see it)."""
        if latents.dtype == torch.long:
            latents = self.codebook[latents]
        h = self.fc(torch.cat([latents, self.class_embedding(labels).to(latents.dtype)], dim=1))
        return self.body(h.view(-1, self.width, 4, 4))

    @torch.no_grad()
    def latents(self, slots: torch.Tensor | None, count: int, generator: torch.Generator) -> torch.Tensor:
        codebook = self.codebook.detach().float().cpu()
        k = self.codebook_size
        if slots is None:
            centres = torch.randint(k, (count,), generator=generator)
            learned = torch.zeros(count, dtype=torch.bool)
        else:
            centres, learned = slots % k, slots < k
        spread = codebook.std(0) if k > 1 else codebook.std().expand(codebook.shape[1])
        noise = gaussian_latents(count, codebook.shape[1], generator, self.truncation) * spread * self.extra_code_spread
        return codebook[centres] + noise * (~learned).unsqueeze(1)


class FeatureDiscriminator(nn.Module):
    """D(features, class condition) -> (real/fake logit (N,), class logits (N, C)); the
    sigmoid of the paper's D is applied by the loss (logits form, numerically stable)."""

    def __init__(self, feature_dim: int, condition_dim: int, num_classes: int, hidden: int = 512,
                 condition_embed: int = 128):
        super().__init__()
        self.condition = nn.Linear(condition_dim, condition_embed)
        self.trunk = nn.Sequential(nn.Linear(feature_dim + condition_embed, hidden), nn.LeakyReLU(0.2),
                                   nn.Linear(hidden, hidden), nn.LeakyReLU(0.2))
        self.source = nn.Linear(hidden, 1)
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, features: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(torch.cat([features, self.condition(condition)], dim=1))
        return self.source(h).squeeze(1), self.classifier(h)
