"""Coreset selection: real images chosen per class.

Every selection method is ``fn(images, ipc, seed, cfg) -> dataset indices`` (grouped by
class, ``ipc`` per class), with ``cfg`` a :class:`SelectionConfig` or None for its
defaults. Herding, k-center and KMeans-emb (the rules of :mod:`gencond.data.selection`)
work in the embedding (the features before the linear head) of a ConvNet trained on the
data, as DC-BENCH does; random needs none. The same trained network is the selection
network of candidate selection at serving time (:func:`embedding_network`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch
from torch import nn

from gencond.data.base import ImageSet
from gencond.data.sampler import check_ipc, random_subset
from gencond.data.selection import (
    herding_positions,
    kcenter_positions,
    kmeans_positions,
)
from gencond.engine.networks import real_data_network, resolve_device
from gencond.errors import GencondError
from gencond.methods._registry import register_method
from gencond.methods.base import CondenseConfig
from gencond.models import check_architecture, embed


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
_NETWORKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _cached(store: weakref.WeakKeyDictionary, images: ImageSet, cfg: SelectionConfig, seed: int, compute):
    """``compute(images, cfg, seed)``, once per image set and embedding settings."""
    key = (cfg.embed_net, cfg.embed_epochs, cfg.device, seed)
    cache = store.setdefault(images, {})
    if key not in cache:
        cache[key] = compute(images, cfg, seed)
    return cache[key]


def class_embeddings(images: ImageSet, cfg: SelectionConfig, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per class: (dataset indices, embeddings) from a network trained ``embed_epochs`` on
    the data. Cached per image set and settings, so several IPCs share one training."""
    return _cached(_EMBEDDINGS, images, cfg, seed, _compute_embeddings)


def embedding_network(images: ImageSet, cfg: SelectionConfig, seed: int) -> nn.Module:
    """The network whose embedding the selection rules use: ``cfg.embed_net`` initialised
    from ``seed`` and trained ``embed_epochs`` on ``images``; in eval mode on ``cfg.device``.
    Cached like the embeddings, so a caller that needs the same network (the codebook's
    feature network, which also starts its codes from a selection) trains it once; callers
    must not train it further."""
    return _cached(_NETWORKS, images, cfg, seed, _train_embedding_network)


def _train_embedding_network(images: ImageSet, cfg: SelectionConfig, seed: int) -> nn.Module:
    return real_data_network(images, cfg.embed_net, cfg.embed_epochs, resolve_device(cfg.device), seed)


def _compute_embeddings(images: ImageSet, cfg: SelectionConfig, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    net = embedding_network(images, cfg, seed)
    device = next(net.parameters()).device
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
