"""Coreset selection: real images chosen per class.

Every selection method is ``fn(images, ipc, seed, cfg) -> dataset indices`` (grouped by
class, ``ipc`` per class), with ``cfg`` a :class:`SelectionConfig` or None for its
defaults. Herding, k-center and KMeans-emb work in the embedding (the features before
the linear head) of a ConvNet trained on the data, as DC-BENCH does; random needs none.

- herding (Welling 2009; as in the DM paper's baseline and IDC's code): greedily add the
  image that brings the mean of the chosen embeddings closest to the class mean;
- k-center (Sener & Savarese 2018): start from a random image of the class, then
  repeatedly add the image farthest (L2) from everything chosen so far;
- KMeans-emb (DC-BENCH): k-means with k = IPC in the embedding space of each class,
  initialised from random images of the class, then the real image nearest each centre.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch

from gencond.data.base import ImageSet
from gencond.data.sampler import check_ipc, random_subset
from gencond.errors import GencondError
from gencond.methods._registry import register_method
from gencond.methods.base import CondenseConfig
from gencond.models import check_architecture, create_network, embed
from gencond.training.networks import (
    IndexedData,
    TrainConfig,
    resolve_device,
    train_network,
)


@dataclass
class SelectionConfig(CondenseConfig):
    """Selection settings: the embedding network of herding, k-center and KMeans-emb."""

    embed_net: str = field(default="convnet3", metadata={"help": "network whose features the selection uses"})
    embed_epochs: int = field(default=1, metadata={"help": "epochs it trains on the real data first (DC-BENCH: 1)"})
    kmeans_iterations: int = field(default=300, metadata={"help": "Lloyd iterations at most (sklearn's default)"})

    def check(self) -> None:
        super().check()
        check_architecture(self.embed_net)
        if self.embed_epochs < 0 or self.kmeans_iterations <= 0:
            raise GencondError("embed_epochs must be >= 0 and kmeans_iterations > 0")


@register_method("random", kind="selection", config=SelectionConfig)
def random_selection(images: ImageSet, ipc: int, seed: int = 0, cfg: SelectionConfig | None = None) -> torch.Tensor:
    """Random real images, ``ipc`` per class (seeded)."""
    return random_subset(images, ipc, seed)


# --- the embedding ---

_EMBEDDINGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def class_embeddings(images: ImageSet, cfg: SelectionConfig, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per class: (dataset indices, embeddings) from a network trained ``embed_epochs`` on
    the data. Cached per image set and settings, so several IPCs share one training."""
    key = (cfg.embed_net, cfg.embed_epochs, cfg.device, seed)
    cache = _EMBEDDINGS.setdefault(images, {})
    if key not in cache:
        cache[key] = _compute_embeddings(images, cfg, seed)
    return cache[key]


def _compute_embeddings(images: ImageSet, cfg: SelectionConfig, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    info, device = images.info, resolve_device(cfg.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = create_network(cfg.embed_net, info.num_classes, info.channels, info.image_size)
    if cfg.embed_epochs:
        train_network(net, IndexedData.from_image_set(images), TrainConfig(epochs=cfg.embed_epochs), device, seed)
    net.to(device).eval()
    order = torch.argsort(images.labels, stable=True)
    per_class = []
    with torch.no_grad():
        for indices in order.split(images.class_counts().tolist()):
            features = torch.cat([embed(net, images.images(chunk).to(device)).float().cpu() for chunk in indices.split(1024)])
            per_class.append((indices, features))
    return per_class


def _select_per_class(images: ImageSet, ipc: int, seed: int, cfg: SelectionConfig | None, pick) -> torch.Tensor:
    """Run ``pick(features, ipc, generator) -> positions`` on every class's embeddings."""
    cfg = cfg or SelectionConfig()
    check_ipc(images, ipc)
    generator = torch.Generator().manual_seed(seed)
    chosen = [indices[pick(features, ipc, generator)] for indices, features in class_embeddings(images, cfg, seed)]
    return torch.cat(chosen)


# --- the selection rules, on one class's embeddings (N, D) ---


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


@register_method("herding", kind="selection", config=SelectionConfig)
def herding(images: ImageSet, ipc: int, seed: int = 0, cfg: SelectionConfig | None = None) -> torch.Tensor:
    """Herding: greedy class-mean matching in a trained ConvNet's embedding."""
    return _select_per_class(images, ipc, seed, cfg, herding_positions)


@register_method("kcenter", kind="selection", config=SelectionConfig)
def kcenter(images: ImageSet, ipc: int, seed: int = 0, cfg: SelectionConfig | None = None) -> torch.Tensor:
    """K-center: greedy farthest-point selection in a trained ConvNet's embedding."""
    return _select_per_class(images, ipc, seed, cfg, kcenter_positions)


@register_method("kmeans", kind="selection", config=SelectionConfig)
def kmeans_emb(images: ImageSet, ipc: int, seed: int = 0, cfg: SelectionConfig | None = None) -> torch.Tensor:
    """KMeans-emb (DC-BENCH): the real image nearest each k-means centre of the embedding."""
    iterations = (cfg or SelectionConfig()).kmeans_iterations
    return _select_per_class(images, ipc, seed, cfg,
                             lambda f, k, g: kmeans_positions(f, k, g, iterations))
