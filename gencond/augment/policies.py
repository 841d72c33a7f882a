"""Image-space augmentation policies of DC-BENCH's robustness protocol (Cui et al. 2022):
torchvision's standard transforms applied to each training image of an evaluation batch.

``imagenet``
    random crop with 4 pixels of zero padding, horizontal flip, colour jitter (brightness,
    contrast and saturation 0.4, hue 0.2), DC-BENCH's "imagenet_aug";
``autoaugment``
    torchvision's AutoAugment with the CIFAR-10 policy (the ImageNet policy from 64 pixels
    on, as DC-BENCH uses it for Tiny ImageNet);
``randaugment``
    torchvision's RandAugment with one operation per image (DC-BENCH's ``num_ops=1``;
    torchvision's default is 2).

Images arrive normalized; each policy works on their 8-bit pixels (denormalized, clamped
to [0, 1], rounded), as the transforms expect, and returns them normalized again.
Unlike DSA these policies are not differentiable: they serve evaluation only.

One difference from DC-BENCH's code, on purpose: DC-BENCH passes a whole batch to one
transform call, so every image of a batch gets the same draw; here each image gets its
own, as a per-sample DataLoader transform would give it. Every draw comes from the
caller's generator, so a seeded training run is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torchvision import transforms

POLICIES = ("imagenet", "autoaugment", "randaugment")


def policy_transform(name: str, image_size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The torchvision transform of policy ``name`` for one uint8 image (C, H, W)."""
    if name == "imagenet":
        return transforms.Compose([
            transforms.RandomCrop(image_size, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2),
        ])
    if name == "autoaugment":
        policy = transforms.AutoAugmentPolicy.IMAGENET if image_size >= 64 else transforms.AutoAugmentPolicy.CIFAR10
        return transforms.AutoAugment(policy)
    if name == "randaugment":
        return transforms.RandAugment(num_ops=1)
    raise ValueError(f"unknown augmentation policy {name!r}; choose from {', '.join(POLICIES)}")


class PolicyAugment:
    """Applies a policy (or any per-image ``transform`` of uint8 images) to each image of a
    normalized batch, with draws from ``generator``."""

    def __init__(self, name: str, mean: Sequence[float], std: Sequence[float], image_size: int,
                 generator: torch.Generator | None = None,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.transform = transform or policy_transform(name, image_size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.generator = generator

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        pixels = ((x.detach().float().cpu() * self.std + self.mean).clamp(0, 1) * 255).round().to(torch.uint8)
        # torchvision draws from torch's global generator: seed a private copy of it
        seed = int(torch.randint(1 << 62, (1,), generator=self.generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = torch.stack([self.transform(image) for image in pixels])
        return ((out.float() / 255 - self.mean) / self.std).to(device=x.device, dtype=x.dtype)
