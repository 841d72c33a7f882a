"""Class fidelity: how often a classifier trained on real data agrees with the label a
generator was asked for. The fresh evaluation protocol can hide weak class conditioning
(new samples every step average it out); a fixed set drawn once cannot, and this number
says why."""

from __future__ import annotations

import torch
from torch import nn

from gencond.engine.sampling import sample_set
from gencond.models import ConditionalGenerator


@torch.no_grad()
def class_fidelity(generator: ConditionalGenerator, classifier: nn.Module, inpc: int = 100, seed: int = 0,
                   batch_size: int = 500) -> float:
    """Share (%) of ``inpc`` x C generated images that ``classifier`` assigns to their label."""
    drawn = sample_set(generator, inpc, seed, batch_size=batch_size)
    device = next(classifier.parameters()).device
    classifier.eval()
    predictions = torch.cat([classifier(x.to(device)).argmax(1).cpu() for x in drawn.images.split(batch_size)])
    return 100.0 * float((predictions == drawn.labels).float().mean())
