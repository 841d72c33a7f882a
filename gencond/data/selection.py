"""Selection rules on one class's embeddings (N, D) -> the positions of the k chosen
items. Coreset selection applies them to real images (``gencond.methods.coresets``),
candidate selection to generated ones (``gencond.engine.candidates``).

- herding (Welling 2009; as in the DM paper's baseline and IDC's code): greedily add the
  item that brings the mean of the chosen embeddings closest to the class mean;
- k-center (Sener & Savarese 2018): start from a random item of the class, then
  repeatedly add the item farthest (L2) from everything chosen so far;
- k-means prototypes (DC-BENCH's KMeans-emb): k-means with k centres in the embedding,
  initialised from random items, then the item nearest each centre.
"""

from __future__ import annotations

import torch


def herding_positions(features: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Greedy mean matching: at step t pick the unchosen x minimising
    || mu - (S + x) / t ||, i.e. || t mu - S - x ||, where S sums the chosen embeddings."""
    mu = features.mean(0)
    chosen = torch.zeros(len(features), dtype=torch.bool)
    total = torch.zeros_like(mu)
    picks = []
    for t in range(1, k + 1):
        distance = (t * mu - total - features).norm(dim=1).masked_fill(chosen, float("inf"))
        i = int(distance.argmin())
        picks.append(i)
        chosen[i] = True
        total += features[i]
    return torch.tensor(picks)


def kcenter_positions(features: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Greedy k-center: a random first centre, then the point farthest from all centres."""
    picks = [int(torch.randint(len(features), (1,), generator=generator))]
    nearest = (features - features[picks[0]]).norm(dim=1)
    for _ in range(k - 1):
        i = int(nearest.argmax())
        picks.append(i)
        nearest = torch.minimum(nearest, (features - features[i]).norm(dim=1))
    return torch.tensor(picks)


def kmeans(features: torch.Tensor, k: int, generator: torch.Generator, iterations: int = 300, tol: float = 1e-4) -> torch.Tensor:
    """Lloyd's k-means from k random points; returns the (k, D) centres. A centre that
    loses all its points keeps its place. Stops when no centre moves more than ``tol``
    times the mean feature variance (sklearn's criterion)."""
    centres = features[torch.randperm(len(features), generator=generator)[:k]].clone()
    threshold = tol * float(features.var(0).mean())
    for _ in range(iterations):
        assign = torch.cdist(features, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, features)
        counts = torch.bincount(assign, minlength=k).unsqueeze(1)
        updated = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
        shift = float(((updated - centres) ** 2).sum(1).max())
        centres = updated
        if shift <= threshold:
            break
    return centres


def kmeans_positions(features: torch.Tensor, k: int, generator: torch.Generator, iterations: int = 300) -> torch.Tensor:
    """The real point nearest each k-means centre, each point used once."""
    distance = torch.cdist(kmeans(features, k, generator, iterations), features)
    picks = []
    for row in distance:  # k rows: a later centre skips points already taken
        row = row.clone()
        if picks:
            row[torch.tensor(picks)] = float("inf")
        picks.append(int(row.argmin()))
    return torch.tensor(picks)
