"""Serving a generator: any number of images per class (INPC), on the fly.

- :func:`sample_set` draws exactly INPC images per class, reproducibly from a seed;
- :class:`GeneratorDataset` is a map-style torch Dataset of INPC x C (image, label) pairs,
  generated lazily in batches; with ``fresh=True`` it draws new noise every epoch, in any
  DataLoader set-up (workers, persistence, shuffling; :class:`EpochSampler` for
  distributed runs and exact epochs);
- :class:`Selector` and the rules of ``CANDIDATE_RULES`` (herding, kcenter, kmeans,
  confidence) keep INPC of M x INPC draws per class (``candidates=M``);
- :func:`write_sampled` writes a drawn set as ImageFolder PNGs or a condensed set file.
"""

from gencond.engine.candidates import CANDIDATE_RULES, Selector, register_candidate_rule
from gencond.engine.sampling import Teacher, class_list, sample_set
from gencond.serve.dataset import EpochSampler, GeneratorDataset
from gencond.serve.export import write_sampled

__all__ = ["CANDIDATE_RULES", "EpochSampler", "GeneratorDataset", "Selector", "Teacher", "class_list",
           "register_candidate_rule", "sample_set", "write_sampled"]
