"""D3HR fixed sets for a diffusion generator (Zhao et al. 2025, "Taming Diffusion for Dataset
Distillation with High Representativeness"; official code lin-zhao-resoLve/D3HR):

1. **Domain mapping.** DDIM inversion (:meth:`DiffusionGenerator.invert`) takes every real
   training image of a class to the noisy image at the timestep where the last ``strength``
   of the sampler's steps begins (1: pure noise; the official code stops at about 0.6 of
   the trajectory). A class's inverted latents are summarised per dimension by a Gaussian
   N(mu_c, sigma_c^2) (:class:`LatentGaussians`).
2. **Group sampling.** ``groups`` candidate groups of INPC latents are drawn from that
   Gaussian, and the group whose own statistics are nearest it is kept:
   ``||mean(G) - mu|| + ||std(G) - sigma|| + skew_weight * ||skew(G)||`` (:func:`group_scores`;
   the official code's terms and weight 0.1).
3. The kept latents are denoised from that timestep by DDIM (:meth:`generate_from`), with the
   steps and guidance scale the inversion used.

Unlike every other fixed set gencond draws, a D3HR set is chosen for its INPC: the best group
of n latents is not the first n of the best group of a larger size, so the set of INPC n is
not a prefix of the set of INPC m. The seed fixes the candidate groups (a stream of its own
per class), so a set is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gencond.data import ImageSet
from gencond.errors import GencondError
from gencond.models.generators import ConditionalGenerator
from gencond.runtime import seeded_generator

# The key of the candidate groups' random stream, apart from every latent block's (seed, class,
# block) and the candidate rules' stream.
GROUP_STREAM = 2**41
# Defaults: the official code's inversion depth (30 of 50 DDIM steps) and a CPU-sized search
# (the official code's nominal m is 100,000 groups).
D3HR_STRENGTH = 0.6
D3HR_GROUPS = 10_000
# Candidate latents held at once while scoring groups (floats): bounds the memory of a search.
GROUP_BATCH_FLOATS = 2**22


@dataclass
class LatentGaussians:
    """Per-class, per-dimension mean and std (``(K, C, H, W)`` each) of a generator's DDIM
    inversions of real training images at ``strength``, with the sampler settings of that
    inversion (generation from these latents must use the same)."""

    mean: torch.Tensor
    std: torch.Tensor
    strength: float
    sampling: dict
    images: int

    @property
    def description(self) -> dict:
        return {"strength": self.strength, "inverted_images": self.images, "sampling": self.sampling}


def check_invertible(generator: ConditionalGenerator) -> None:
    if not hasattr(generator, "invert"):
        raise GencondError(f"D3HR latents need a diffusion generator, not {generator.architecture}")


def fit_latent_gaussians(generator: ConditionalGenerator, train: ImageSet, strength: float,
                         classes: torch.Tensor | None = None, batch_size: int = 500) -> LatentGaussians:
    """Invert the training images of ``classes`` (all by default) with ``generator`` (DDIM,
    its steps and guidance) and fit each class's Gaussian; other classes' rows stay zero."""
    check_invertible(generator)
    generator = generator.with_sampler("ddim")
    generator.inverted_steps(strength)  # refuses a bad strength before any work
    num_classes = generator.info.num_classes
    wanted = torch.zeros(num_classes, dtype=torch.bool)
    wanted[torch.arange(num_classes) if classes is None else classes] = True
    index = torch.nonzero(wanted[train.labels]).flatten()
    counts = torch.bincount(train.labels[index], minlength=num_classes)
    short = [c for c in torch.nonzero(wanted).flatten().tolist() if counts[c] < 2]
    if short:
        raise GencondError(f"class {short[0]} has {int(counts[short[0]])} training image(s): D3HR fits a "
                           "Gaussian to each class's inverted images and needs at least 2")
    shape = (generator.channels, generator.image_size, generator.image_size)
    sums = torch.zeros(num_classes, *shape, dtype=torch.float64)
    squares = torch.zeros_like(sums)
    for part in index.split(batch_size):
        images, labels = train.batch(part)
        latents = generator.invert(images, labels, strength).double().cpu()
        sums.index_add_(0, labels, latents)
        squares.index_add_(0, labels, latents.square())
    n = counts.clamp(min=2).double().view(-1, 1, 1, 1)
    mean = sums / n
    var = ((squares - n * mean.square()) / (n - 1)).clamp(min=0)
    return LatentGaussians(mean.float(), var.sqrt().float(), strength, generator.sampling_description(), len(index))


def group_scores(groups: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, skew_weight: float = 0.1) -> torch.Tensor:
    """How far each candidate group ``(G, n, D)`` is from the Gaussian N(mean, std^2) (lower
    is nearer): the norm of its mean's error, plus (n >= 2) the norm of its std's error
    (unbiased), plus ``skew_weight`` x the norm over its n latents of their skewness as the
    official code computes it: each latent standardised per dimension by the group's mean and
    std, cubed and summed over the D dimensions with the factor D / ((D - 1)(D - 2))."""
    n, dims = groups.shape[1], groups.shape[2]
    centre = groups.mean(1)
    score = (centre - mean).norm(dim=1)
    if n >= 2:
        spread = groups.std(1)
        score = score + (spread - std).norm(dim=1)
        z = (groups - centre.unsqueeze(1)) / spread.unsqueeze(1)
        skew = z.pow(3).sum(2) * (dims / ((dims - 1) * (dims - 2)))
        score = score + skew_weight * skew.norm(dim=1)
    return score


def choose_group(mean: torch.Tensor, std: torch.Tensor, n: int, groups: int, generator: torch.Generator,
                 skew_weight: float = 0.1) -> torch.Tensor:
    """The best of ``groups`` candidate groups of ``n`` latents drawn from N(mean, std^2)
    (flat, ``(D,)`` each) by :func:`group_scores`, as ``(n, D)``; drawn in batches of
    bounded memory, the first best kept on ties."""
    if groups <= 0:
        raise GencondError(f"D3HR candidate groups must be positive, got {groups}")
    dims = mean.numel()
    per_batch = max(1, min(groups, GROUP_BATCH_FLOATS // (n * dims)))
    best, best_score = None, float("inf")
    for start in range(0, groups, per_batch):
        count = min(per_batch, groups - start)
        candidates = mean + std * torch.randn(count, n, dims, generator=generator)
        scores = group_scores(candidates, mean, std, skew_weight)
        k = int(scores.argmin())
        if scores[k] < best_score:
            best, best_score = candidates[k], float(scores[k])
    return best


@dataclass
class D3HR:
    """D3HR as a way of choosing a generator's fixed set (:func:`gencond.serve.sample_set`'s
    ``d3hr``): the class Gaussians, the number of candidate groups and the skew weight."""

    gaussians: LatentGaussians
    groups: int = D3HR_GROUPS
    skew_weight: float = 0.1

    @property
    def description(self) -> dict:
        return {"rule": "d3hr", "groups": self.groups, "skew_weight": self.skew_weight,
                **self.gaussians.description}

    @torch.no_grad()
    def class_images(self, generator: ConditionalGenerator, cls: int, inpc: int, seed: int,
                     batch_size: int = 500) -> torch.Tensor:
        """The ``inpc`` images of class ``cls`` (CPU, normalized space): the kept group's
        latents denoised with the inversion's sampler settings."""
        g = self.gaussians
        if not g.std[cls].any():
            raise GencondError(f"class {cls} has no fitted latent Gaussian: fit the classes you draw")
        served = generator.with_sampler(**{"mixed_precision": "no"} | g.sampling)
        latents = choose_group(g.mean[cls].flatten(), g.std[cls].flatten(), inpc, self.groups,
                               seeded_generator(seed, cls, GROUP_STREAM), self.skew_weight)
        latents = latents.view(inpc, *g.mean.shape[1:])
        labels = torch.full((inpc,), cls, dtype=torch.long)
        parts = [served.generate_from(y, z, g.strength) for y, z in zip(labels.split(batch_size),
                                                                           latents.split(batch_size))]
        return torch.cat(parts).cpu()
