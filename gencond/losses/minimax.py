"""The minimax criteria of Minimax diffusion (Gu et al., CVPR 2024, Eqs. 6-7), as the
official ``train_dit.py`` computes them.

For every class c in a batch, with the model's embeddings E_c of that class's images (the
clean image the model predicts), a memory R_c of recent real images of c and a memory
P_c of recent embeddings of c (both at most ``memory_size``, oldest dropped first):

- representativeness: lambda_pos * (1 - min cos(E_c, R_c)): even the real image least like
  any generated one should be near one (the minimum runs over every pair);
- diversity: lambda_neg * max cos(E_c, P_c): no generated image may be near an earlier one.

Each is summed over the classes whose memory is not empty and divided by the number of
classes in the batch. The memories are updated after the loss, with the batch's real
images and detached embeddings, so a class's first batch adds no term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def own_class_similarity(embeddings: torch.Tensor, present: torch.Tensor, inverse: torch.Tensor,
                         bank: torch.Tensor) -> torch.Tensor:
    """(B, M) cosine similarities of every embedding with each slot of its own class's memory:
    one product over the classes present (``present``, and each embedding's index among them,
    ``inverse``: ``labels.unique(return_inverse=True)``), not one per class.

    ``embeddings`` (B, D); ``bank`` (classes, M, D)."""
    size = bank.shape[1]
    slots = F.normalize(bank[present].flatten(0, 1).to(embeddings.dtype), dim=1)  # (K * M, D)
    sims = (F.normalize(embeddings, dim=1) @ slots.T).view(len(inverse), len(present), size)
    return sims.gather(1, inverse.view(-1, 1, 1).expand(-1, 1, size)).squeeze(1)


def per_class_extreme(values: torch.Tensor, filled: torch.Tensor, inverse: torch.Tensor, classes: int,
                      largest: bool) -> torch.Tensor:
    """The extreme over every filled slot of every sample, per class present (index ``inverse``);
    +-inf for a class with no filled slot."""
    fill = float("-inf") if largest else float("inf")
    per_sample = values.masked_fill(~filled, fill)
    per_sample = per_sample.amax(1) if largest else per_sample.amin(1)
    out = per_sample.new_full((classes,), fill)
    return out.scatter_reduce(0, inverse, per_sample, reduce="amax" if largest else "amin")


def minimax_losses(embeddings: torch.Tensor, labels: torch.Tensor, memory: MinimaxMemory,
                   lambda_pos: float, lambda_neg: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(representativeness, diversity) terms of a batch (see the module docstring); the
    memory is read, not updated. ``embeddings`` (B, D), with gradients."""
    present, inverse = labels.unique(return_inverse=True)
    size, classes = memory.real.shape[1], len(present)
    filled = torch.arange(size, device=labels.device).unsqueeze(0) < memory.count[labels].unsqueeze(1)  # both memories
    has = memory.count[present] > 0
    real = own_class_similarity(embeddings, present, inverse, memory.real)
    lowest = per_class_extreme(real, filled, inverse, classes, largest=False)
    pos = torch.where(has, 1 - lowest, torch.zeros_like(lowest)).sum() * lambda_pos / classes
    fake = own_class_similarity(embeddings, present, inverse, memory.fake)
    highest = per_class_extreme(fake, filled, inverse, classes, largest=True)
    neg = torch.where(has, highest, torch.zeros_like(highest)).sum() * lambda_neg / classes
    return pos, neg


class MinimaxMemory:
    """The per-class memories of real images and of embeddings: ring buffers of
    ``size`` rows per class, filled together, the oldest row overwritten first."""

    def __init__(self, num_classes: int, size: int, dim: int, device: torch.device | str = "cpu"):
        self.real = torch.zeros(num_classes, size, dim, device=device)
        self.fake = torch.zeros(num_classes, size, dim, device=device)
        self.count = torch.zeros(num_classes, dtype=torch.long, device=device)
        self.next = torch.zeros(num_classes, dtype=torch.long, device=device)

    @torch.no_grad()
    def update(self, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor) -> None:
        """Append a batch's rows (in batch order) to their classes' memories; of a class with
        more rows than ``size`` in one batch, the last ``size`` are kept."""
        size = self.real.shape[1]
        order = torch.argsort(labels, stable=True)
        labels_sorted = labels[order]
        per_class = torch.bincount(labels_sorted, minlength=len(self.count))
        starts = torch.cumsum(per_class, 0) - per_class
        rank = torch.arange(len(labels), device=labels.device) - starts[labels_sorted]  # position within its class
        keep = rank >= per_class[labels_sorted] - size
        rows, cls, rank = order[keep], labels_sorted[keep], rank[keep]
        slot = (self.next[cls] + rank - (per_class[cls] - per_class[cls].clamp(max=size))) % size
        self.real[cls, slot] = real[rows].to(self.real.dtype)
        self.fake[cls, slot] = fake[rows].to(self.fake.dtype)
        self.next = (self.next + per_class.clamp(max=size)) % size
        self.count = (self.count + per_class).clamp(max=size)

    def state_dict(self) -> dict:
        return {"real": self.real, "fake": self.fake, "count": self.count, "next": self.next}

    def load_state_dict(self, state: dict) -> None:
        device = self.real.device
        self.real, self.fake = state["real"].to(device), state["fake"].to(device)
        self.count, self.next = state["count"].to(device), state["next"].to(device)
