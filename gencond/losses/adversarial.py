"""Adversarial losses of gencond's generators.

- DiM: the auxiliary-classifier Wasserstein GAN with gradient penalty (Gulrajani et al.
  2017; Odena et al. 2017) on images, as DiM's official code trains it.
- Codebook generator (Zhang et al. 2023, Eq. 1 and L_c): a sigmoid discriminator on the
  *features* of a network (real vs generated, conditioned on the class embedding), plus a
  classification head on the same features; the standard GAN objective, with the
  generator's side in its non-saturating form (-log D(fake) instead of log(1 - D(fake)),
  Goodfellow et al. 2014), which gives the same fixed point and usable early gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def wgan_generator_loss(disc: nn.Module, fake: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """AC-WGAN generator loss: -critic(fake) + CE(class head(fake), labels)."""
    score, logits = disc(fake)
    return -score.mean() + F.cross_entropy(logits, labels)


def gradient_penalty(critic_of_interpolates: torch.Tensor, interpolates: torch.Tensor) -> torch.Tensor:
    """Mean over samples of (||d critic / d x||_2 - 1)^2 at the interpolates (Gulrajani et al. 2017)."""
    (grads,) = torch.autograd.grad(critic_of_interpolates.sum(), interpolates, create_graph=True)
    return ((grads.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def wgan_discriminator_loss(disc: nn.Module, real: torch.Tensor, real_labels: torch.Tensor, fake: torch.Tensor,
                            fake_labels: torch.Tensor, gp_weight: float, alpha: torch.Tensor) -> dict[str, torch.Tensor]:
    """AC-WGAN-GP critic loss. Real and generated images go through the critic as one
    batch (every critic layer is per-sample, so this equals two passes); the interpolates
    get a pass of their own so the double backward of the penalty covers only them."""
    scores, logits = disc(torch.cat([real, fake]))
    n = len(real)
    wasserstein = scores[n:].mean() - scores[:n].mean()
    classification = F.cross_entropy(logits[:n], real_labels) + F.cross_entropy(logits[n:], fake_labels)
    weight = alpha.view(-1, 1, 1, 1)
    interpolates = (weight * real + (1 - weight) * fake).requires_grad_(True)
    penalty = gradient_penalty(disc(interpolates)[0], interpolates)
    return {"loss": wasserstein + classification + gp_weight * penalty, "wasserstein": wasserstein,
            "d_class": classification, "gp": penalty}


def feature_generator_loss(real_fake_logit: torch.Tensor, class_logits: torch.Tensor,
                           targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """The generator's side of L_GAN = L_adv + L_c on generated features: -log D(fake)
    (non-saturating) and the cross-entropy of the classifier head against ``targets``
    (class indices, or class probabilities for soft labels)."""
    adversarial = F.binary_cross_entropy_with_logits(real_fake_logit, torch.ones_like(real_fake_logit))
    return {"adv": adversarial, "cls": F.cross_entropy(class_logits, targets)}


def feature_discriminator_loss(real_logit: torch.Tensor, fake_logit: torch.Tensor, real_class_logits: torch.Tensor,
                               fake_class_logits: torch.Tensor, real_targets: torch.Tensor,
                               fake_targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """The discriminator's side: -log D(real) - log(1 - D(fake)) (Eq. 1, D's sigmoid
    applied inside the logits form for stability), plus the classifier head's
    cross-entropy on real and generated features (L_c, as in AC-GAN)."""
    adversarial = (F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
                   + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit)))
    classification = F.cross_entropy(real_class_logits, real_targets) + F.cross_entropy(fake_class_logits, fake_targets)
    return {"loss": adversarial + classification, "d_adv": adversarial, "d_cls": classification}
