"""Candidate selection at serving time: draw M x N images per class from a generator and
keep N of them by a rule applied in a selection network's embedding, as coresets are
chosen from real data. A generator's fixed set of N images per class is then a choice
among M x N draws instead of the first N.

Rules are registered by name (``register_candidate_rule``); each takes one class's
candidates as ``(embeddings (M*N, D), confidence (M*N,), n, generator)`` and returns the
positions of the ``n`` kept, in the order they were chosen:

- ``herding``, ``kcenter``, ``kmeans``: the coreset rules of :mod:`gencond.data.selection`
  (``kmeans`` keeps the candidate nearest each of n k-means centres: prototypes);
- ``confidence``: the n candidates the selection network gives the highest probability
  of their intended class (a class-confidence filter).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from gencond.data.selection import (
    herding_positions,
    kcenter_positions,
    kmeans_positions,
)
from gencond.engine.networks import ReferenceNetwork
from gencond.errors import GencondError
from gencond.runtime import seeded_generator

# The key of the selection rules' random stream, apart from every latent block's (seed, class, block).
SELECTION_STREAM = 2**40

CandidateRule = Callable[[torch.Tensor, torch.Tensor, int, torch.Generator], torch.Tensor]
CANDIDATE_RULES: dict[str, CandidateRule] = {}


def register_candidate_rule(name: str) -> Callable[[CandidateRule], CandidateRule]:
    def add(rule: CandidateRule) -> CandidateRule:
        CANDIDATE_RULES[name] = rule
        return rule

    return add


@register_candidate_rule("herding")
def _herding(features: torch.Tensor, confidence: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    return herding_positions(features, n)


@register_candidate_rule("kcenter")
def _kcenter(features: torch.Tensor, confidence: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    return kcenter_positions(features, n, generator)


@register_candidate_rule("kmeans")
def _kmeans(features: torch.Tensor, confidence: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    return kmeans_positions(features, n, generator)


@register_candidate_rule("confidence")
def _confidence(features: torch.Tensor, confidence: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.sort(confidence, descending=True, stable=True).indices[:n]


# The network candidate selection embeds with (features before its linear head, and its
# class probabilities), and what it is, recorded in the sampled set's metadata.
Selector = ReferenceNetwork


def check_candidates(candidates: int, rule: str, selector: Selector | None, need_selector: bool = True) -> None:
    """One clear error for a bad candidate request, before anything is generated
    (``need_selector=False``: the caller builds the selector after this check)."""
    if candidates < 1:
        raise GencondError(f"candidates per kept image (M) must be >= 1, got {candidates}")
    if candidates > 1 and rule not in CANDIDATE_RULES:
        raise GencondError(f"unknown candidate rule {rule!r}; choose one of {', '.join(CANDIDATE_RULES)}")
    if candidates > 1 and need_selector and selector is None:
        raise GencondError("candidate selection needs a selection network (selector=...)")


@torch.no_grad()
def select_candidates(images: torch.Tensor, labels: torch.Tensor, n: int, rule: str, selector: Selector,
                      seed: int, batch_size: int = 500) -> torch.Tensor:
    """Positions of the kept images: ``n`` per class of ``images`` (normalized, grouped by
    class as ``labels`` says), chosen by ``rule`` in ``selector``'s embedding; class-major,
    each class's positions in the order the rule chose them. The network runs in eval mode
    and is returned to its previous mode."""
    net = selector.net
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    features, confidence = [], []
    for x, y in zip(images.split(batch_size), labels.split(batch_size)):
        hidden = net.forward_features(x.to(device))
        features.append(net.forward_head(hidden, pre_logits=True).float().cpu())
        probabilities = net.forward_head(hidden).float().softmax(1).cpu()
        confidence.append(probabilities.gather(1, y.view(-1, 1)).squeeze(1))
    net.train(was_training)
    features, confidence = torch.cat(features), torch.cat(confidence)
    kept = []
    for c in torch.unique_consecutive(labels).tolist():
        members = torch.nonzero(labels == c).squeeze(1)
        generator = seeded_generator(seed, c, SELECTION_STREAM)  # per class: a class's choice is its own
        kept.append(members[CANDIDATE_RULES[rule](features[members], confidence[members], n, generator)])
    return torch.cat(kept)
