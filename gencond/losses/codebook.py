"""The codebook generator's condensation losses (Zhang et al. 2023, Eqs. 2-4).

Generated images come grouped as (classes, K) — every class's K images, one per code —
so every loss is one batched computation over classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def feature_matching_loss(synthetic_layers: list[torch.Tensor], association_means: list[torch.Tensor]) -> torch.Tensor:
    """Eq. 2: for every generated image, the squared distance between its features and
    the mean features of its association (real images of its class), summed over the
    layers of the network. Each layer's distance is a mean squared error (the paper:
    "the MSE is applied"), averaged over the generated images.

    ``synthetic_layers[l]``: (classes, K, ...) features of layer l; ``association_means[l]``:
    (classes, ...) the association's mean features of that layer.
    """
    total = synthetic_layers[0].new_zeros(())
    for syn, mean in zip(synthetic_layers, association_means):
        diff = syn - mean.unsqueeze(1)
        total = total + diff.pow(2).flatten(2).mean(2).mean()
    return total


def intra_class_loss(features: torch.Tensor, centres: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 3, InfoNCE: each generated sample's positive is its class centre, its
    negatives are the other samples of its class; dot products of L2-normalised
    features over ``temperature``, averaged over samples. A class with one sample has no
    negatives and contributes zero.

    ``features``: (classes, K, D); ``centres``: (classes, D).
    """
    f = F.normalize(features, dim=-1)
    c = F.normalize(centres, dim=-1)
    positive = (f * c.unsqueeze(1)).sum(-1, keepdim=True) / temperature  # (classes, K, 1)
    pairs = f @ f.transpose(1, 2) / temperature  # (classes, K, K)
    k = f.shape[1]
    pairs = pairs.masked_fill(torch.eye(k, dtype=torch.bool, device=f.device), float("-inf"))
    logits = torch.cat([positive, pairs], dim=-1)
    return (torch.logsumexp(logits, dim=-1) - positive.squeeze(-1)).mean()


def inter_class_loss(features: torch.Tensor, margin: float) -> torch.Tensor:
    """Eq. 4: the hinge max(margin - ||mean_a - mean_b||, 0) over ordered pairs of
    distinct classes, on the class means of L2-normalised features. The paper sums over
    pairs; this averages (sum = mean x C(C - 1)), so the loss weight does not depend on
    how many classes a step draws. Zero with fewer than two classes.

    ``features``: (classes, K, D).
    """
    means = F.normalize(features, dim=-1).mean(1)
    n = len(means)
    if n < 2:
        return means.new_zeros(())
    # the epsilon keeps the gradient finite where two class means coincide
    distances = ((means.unsqueeze(1) - means.unsqueeze(0)).pow(2).sum(-1) + 1e-12).sqrt()
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=means.device)
    return F.relu(margin - distances[off_diagonal]).mean()
