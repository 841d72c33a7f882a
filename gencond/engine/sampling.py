"""Drawing sets of images from a trained class-conditional generator: exactly INPC images
per class, reproducibly from a seed, optionally kept by candidate selection and labelled by
a teacher. Serving (``GeneratorDataset``), evaluation and training all draw through here."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gencond.artifacts import CondensedSet
from gencond.engine.candidates import Selector, check_candidates, select_candidates
from gencond.engine.networks import ReferenceNetwork, teacher_logits
from gencond.errors import GencondError
from gencond.models.generators import ConditionalGenerator

# A network trained on the real data whose logits become the soft labels of sampled images.
Teacher = ReferenceNetwork


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


def class_slots(num_classes: int, inpc: int) -> torch.Tensor:
    """Each image's position within its class's set, for class-major labels."""
    return torch.arange(inpc).repeat(num_classes)


def seeded_latents(generator: ConditionalGenerator, slots: torch.Tensor | None, count: int, seed: int) -> torch.Tensor:
    return generator.latents(slots, count, torch.Generator().manual_seed(seed))


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


def sample_set(generator: ConditionalGenerator, inpc: int, seed: int = 0, classes: Sequence[int] | None = None,
               batch_size: int = 500, candidates: int = 1, rule: str = "herding",
               selector: Selector | None = None, teacher: Teacher | None = None) -> CondensedSet:
    """Exactly ``inpc`` images of each class, grouped by class: the images at positions
    0..inpc-1 of every class's set (a codebook generator's first codes; noise for DiM).
    The latents of the whole set are drawn at once from ``seed``, so the same seed gives
    the same images whatever the batch size or device.

    With ``candidates`` M > 1, positions 0..M*inpc-1 are drawn and ``rule`` keeps
    ``inpc`` of them per class in ``selector``'s embedding (:mod:`gencond.engine.candidates`);
    the set's config records M, the rule and the selector's description.

    With a ``teacher``, the set also stores the teacher's logits of every kept image as
    ``soft_labels``, and its config the teacher's description. A generator made with
    ``generator.truncated(psi)`` draws truncated latents; the set's config records psi."""
    check_inpc(inpc)
    check_candidates(candidates, rule, selector)
    chosen = class_list(generator, classes)
    drawn = inpc * candidates
    labels = chosen.repeat_interleave(drawn)
    latents = seeded_latents(generator, class_slots(len(chosen), drawn), len(labels), seed)
    images = generate_in_batches(generator, labels, latents, batch_size)
    config = {"inpc": inpc, "seed": seed, "generator": generator.architecture_config()}
    if generator.truncation:
        config["truncation"] = generator.truncation
    if candidates > 1:
        keep = select_candidates(images, labels, inpc, rule, selector, seed, batch_size)
        images, labels = images[keep], labels[keep]
        config["candidates"] = {"per_kept_image": candidates, "rule": rule, "selector": selector.description}
    soft_labels = None
    if teacher is not None:
        soft_labels = teacher_logits(teacher.net, images, batch_size)
        config["teacher"] = teacher.description
    return CondensedSet(images, labels, generator.info, soft_labels, method=f"{generator.architecture} sample",
                        config=config)
