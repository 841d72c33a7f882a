"""Drawing sets of images from a trained class-conditional generator: exactly INPC images
per class, reproducibly from a seed, optionally kept by candidate selection and labelled by
a teacher. Serving (``GeneratorDataset``), evaluation and training all draw through here.

Image j of class c has its latent from a random stream of its own block: slots
``LATENT_BLOCK * b .. LATENT_BLOCK * (b + 1) - 1`` of class c draw from a generator seeded
by (seed, c, b). So an image depends on its seed, class and slot only, not on the batch
size, the chunking, the other classes asked for or the set's size: the set of INPC n is
the first n images per class of the set of any larger INPC, and a set of any size can be
generated in bounded memory (:func:`stream_set`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from gencond.artifacts import CondensedSet
from gencond.engine.candidates import Selector, check_candidates, select_candidates
from gencond.engine.d3hr import D3HR
from gencond.engine.networks import ReferenceNetwork, teacher_logits
from gencond.errors import GencondError
from gencond.models.generators import ConditionalGenerator
from gencond.runtime import seeded_generator

# A network trained on the real data whose logits become the soft labels of sampled images.
Teacher = ReferenceNetwork

# Slots per seeded latent stream: large enough that a block's generator costs little per
# image, small enough that drawing a whole block for INPC 1 costs little.
LATENT_BLOCK = 256


def class_list(generator: ConditionalGenerator, classes: Sequence[int] | None) -> torch.Tensor:
    """The classes to draw (all by default), checked against the generator's classes."""
    num_classes = generator.info.num_classes
    if classes is None or len(classes) == 0:
        return torch.arange(num_classes)
    bad = [c for c in classes if not 0 <= int(c) < num_classes]
    if bad:
        raise GencondError(f"class index {bad[0]} is out of range: the generator has classes 0..{num_classes - 1}")
    return torch.as_tensor([int(c) for c in classes])


def check_inpc(inpc: int) -> None:
    if inpc <= 0:
        raise GencondError(f"images per class (INPC) must be positive, got {inpc}")


def class_latents(generator: ConditionalGenerator, cls: int, start: int, stop: int, seed: int,
                  fresh: bool = False) -> torch.Tensor:
    """Latents (CPU) of slots ``start .. stop - 1`` of class ``cls``: the images at those
    positions of the class's set, or (``fresh``) new draws at those places."""
    parts = []
    for block in range(start // LATENT_BLOCK, -(-stop // LATENT_BLOCK)):
        first = block * LATENT_BLOCK
        slots = None if fresh else torch.arange(first, first + LATENT_BLOCK)
        drawn = generator.latents(slots, LATENT_BLOCK, seeded_generator(seed, cls, block))
        parts.append(drawn[max(start - first, 0):stop - first])
    return torch.cat(parts)


def set_latents(generator: ConditionalGenerator, classes: torch.Tensor, inpc: int, seed: int,
                fresh: bool = False) -> torch.Tensor:
    """Latents of the first ``inpc`` slots of every class in ``classes``, class-major."""
    return torch.cat([class_latents(generator, int(c), 0, inpc, seed, fresh) for c in classes])


def set_chunks(classes: torch.Tensor, inpc: int, chunk: int) -> Iterator[list[tuple[int, int, int]]]:
    """The set of ``inpc`` images of each class in ``classes``, class-major, cut into runs of
    at most ``chunk`` images: each run a list of (class, first slot, end slot) pieces."""
    total = len(classes) * inpc
    for begin in range(0, total, chunk):
        end = min(total, begin + chunk)
        yield [(int(classes[k]), max(begin, k * inpc) - k * inpc, min(end, (k + 1) * inpc) - k * inpc)
               for k in range(begin // inpc, (end - 1) // inpc + 1)]


@torch.no_grad()
def generate_in_batches(generator: ConditionalGenerator, labels: torch.Tensor, latents: torch.Tensor,
                        batch_size: int = 500, to_cpu: bool = True) -> torch.Tensor:
    """Images (normalized space) for paired labels and latents, in batches; on the CPU
    unless ``to_cpu`` is false (then on the generator's device)."""
    if batch_size <= 0:
        raise GencondError(f"batch size must be positive, got {batch_size}")
    parts = [generator.generate(y, z) for y, z in zip(labels.split(batch_size), latents.split(batch_size))]
    images = torch.cat(parts) if parts else torch.empty(0)
    return images.cpu() if to_cpu else images


def set_config(generator: ConditionalGenerator, inpc: int, seed: int, candidates: int = 1, rule: str = "herding",
               selector: Selector | None = None, teacher: Teacher | None = None, d3hr: D3HR | None = None) -> dict:
    """What a sampled set's config records: INPC, seed, the generator, and the truncation,
    candidate selection, D3HR latents and teacher when used."""
    config = {"inpc": inpc, "seed": seed, "generator": generator.architecture_config()}
    if generator.truncation:
        config["truncation"] = generator.truncation
    sampling = generator.sampling_description()
    if sampling:
        config["sampling"] = sampling
    if candidates > 1:
        config["candidates"] = {"per_kept_image": candidates, "rule": rule, "selector": selector.description}
    if d3hr is not None:
        config["latents"] = d3hr.description
        config["sampling"] = d3hr.gaussians.sampling
    if teacher is not None:
        config["teacher"] = teacher.description
    return config


def stream_set(generator: ConditionalGenerator, inpc: int, seed: int = 0, classes: Sequence[int] | None = None,
               batch_size: int = 500, candidates: int = 1, rule: str = "herding", selector: Selector | None = None,
               teacher: Teacher | None = None, chunk: int = 10_000, d3hr: D3HR | None = None,
               ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """The set :func:`sample_set` returns, as (images, labels, soft labels or None) runs
    of at most ``chunk`` images, class-major, so memory stays bounded by ``chunk`` whatever
    INPC is. With candidate selection or D3HR a run is one class (its candidates are
    generated or its group chosen together)."""
    check_inpc(inpc)
    if d3hr is not None and candidates > 1:
        raise GencondError("D3HR latents and candidate selection both choose a fixed set: use one of them")
    check_candidates(candidates, rule, selector)
    if chunk <= 0:
        raise GencondError(f"chunk must be positive, got {chunk}")
    chosen = class_list(generator, classes)
    if candidates > 1 or d3hr is not None:
        runs = ([(int(c), 0, inpc * candidates)] for c in chosen)
    else:
        runs = set_chunks(chosen, inpc, chunk)
    for pieces in runs:
        labels = torch.cat([torch.full((stop - start,), c, dtype=torch.long) for c, start, stop in pieces])
        if d3hr is not None:
            images = d3hr.class_images(generator, pieces[0][0], inpc, seed, batch_size)
        else:
            latents = torch.cat([class_latents(generator, c, start, stop, seed) for c, start, stop in pieces])
            images = generate_in_batches(generator, labels, latents, batch_size)
        if candidates > 1:
            keep = select_candidates(images, labels, inpc, rule, selector, seed, batch_size)
            images, labels = images[keep], labels[keep]
        soft = teacher_logits(teacher.net, images, batch_size) if teacher is not None else None
        yield images, labels, soft


def sample_set(generator: ConditionalGenerator, inpc: int, seed: int = 0, classes: Sequence[int] | None = None,
               batch_size: int = 500, candidates: int = 1, rule: str = "herding",
               selector: Selector | None = None, teacher: Teacher | None = None,
               d3hr: D3HR | None = None) -> CondensedSet:
    """Exactly ``inpc`` images of each class, grouped by class: the images at positions
    0..inpc-1 of every class's set (a codebook generator's first codes; noise for DiM),
    the same whatever the batch size, device or other classes asked for.

    With ``candidates`` M > 1, positions 0..M*inpc-1 are drawn and ``rule`` keeps
    ``inpc`` of them per class in ``selector``'s embedding (:mod:`gencond.engine.candidates`);
    the set's config records M, the rule and the selector's description. With ``d3hr`` the
    latents of each class are D3HR's chosen group (:mod:`gencond.engine.d3hr`), which depends
    on INPC: such a set is not a prefix of a larger one.

    With a ``teacher``, the set also stores the teacher's logits of every kept image as
    ``soft_labels``, and its config the teacher's description. A generator made with
    ``generator.truncated(psi)`` draws truncated latents; the set's config records psi."""
    runs = list(stream_set(generator, inpc, seed, classes, batch_size, candidates, rule, selector, teacher,
                           chunk=2**62, d3hr=d3hr))
    images, labels = torch.cat([r[0] for r in runs]), torch.cat([r[1] for r in runs])
    soft_labels = torch.cat([r[2] for r in runs]) if teacher is not None else None
    return CondensedSet(images, labels, generator.info, soft_labels, method=f"{generator.architecture} sample",
                        config=set_config(generator, inpc, seed, candidates, rule, selector, teacher, d3hr))
