"""Matching losses between what a network makes of real and of synthetic images.

Each loss takes a network, a real batch and a synthetic batch with the *same labels in
the same order* (grouped by class), and returns a scalar that is zero when the two
batches are identical. They are registered by name, so a method's config picks one:

``logits``       MSE between the logits of paired real and synthetic images (DiM paper)
``log_softmax``  MSE between log-softmax outputs (DiM official code)
``features``     squared distance between per-class mean embeddings, summed over classes
                 (feature/distribution matching; DiM Table 4, DM)
``gradients``    layer-wise cosine distance between the network's parameter gradients of
                 the classification loss on the two batches (gradient matching; DC)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gencond.errors import GencondError
from gencond.models import embed


@dataclass(frozen=True)
class MatchingLoss:
    name: str
    fn: Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    needs_parameter_gradients: bool


_LOSSES: dict[str, MatchingLoss] = {}


def register_matching(name: str, needs_parameter_gradients: bool = False):
    def decorator(fn):
        _LOSSES[name] = MatchingLoss(name, fn, needs_parameter_gradients)
        return fn

    return decorator


def get_matching(name: str) -> MatchingLoss:
    if name not in _LOSSES:
        raise GencondError(f"unknown matching loss {name!r}; choose one of {', '.join(sorted(_LOSSES))}")
    return _LOSSES[name]


def list_matching() -> list[str]:
    return sorted(_LOSSES)


@register_matching("logits")
def logits_matching(net, real, synthetic, labels):
    with torch.no_grad():
        target = net(real)
    return F.mse_loss(net(synthetic), target)


@register_matching("log_softmax")
def log_softmax_matching(net, real, synthetic, labels):
    with torch.no_grad():
        target = F.log_softmax(net(real), dim=1)
    return F.mse_loss(F.log_softmax(net(synthetic), dim=1), target)


def class_means(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class mean of ``features`` (classes absent from ``labels`` get zeros) and a
    mask of the classes present."""
    sums = torch.zeros(num_classes, features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, labels, features)
    counts = torch.bincount(labels, minlength=num_classes).to(features.dtype)
    return sums / counts.clamp(min=1).unsqueeze(1), counts > 0


@register_matching("features")
def feature_matching(net, real, synthetic, labels):
    num_classes = int(labels.max()) + 1
    with torch.no_grad():
        real_means, present = class_means(embed(net, real), labels, num_classes)
    synthetic_means, _ = class_means(embed(net, synthetic), labels, num_classes)
    return ((real_means - synthetic_means)[present] ** 2).sum()


def layerwise_distance(real_grads: list[torch.Tensor], synthetic_grads: list[torch.Tensor]) -> torch.Tensor:
    """DC's gradient distance: per output unit, 1 - cosine similarity of the gradient rows,
    summed over units and layers. Bias and norm parameters (1-D) are skipped, as in DC."""
    total = synthetic_grads[0].new_zeros(())
    for g_real, g_syn in zip(real_grads, synthetic_grads):
        if g_real.dim() == 1:
            continue
        g_real, g_syn = g_real.flatten(1), g_syn.flatten(1)
        cos = (g_real * g_syn).sum(1) / (g_real.norm(dim=1) * g_syn.norm(dim=1) + 1e-6)
        total = total + (1 - cos).sum()
    return total


@register_matching("gradients", needs_parameter_gradients=True)
def gradient_matching(net, real, synthetic, labels):
    params = [p for p in net.parameters() if p.requires_grad]
    real_grads = torch.autograd.grad(F.cross_entropy(net(real), labels), params)
    synthetic_grads = torch.autograd.grad(F.cross_entropy(net(synthetic), labels), params, create_graph=True)
    return layerwise_distance([g.detach() for g in real_grads], list(synthetic_grads))
