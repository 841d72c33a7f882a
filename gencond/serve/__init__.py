"""Serving a generator: any number of images per class (INPC), on the fly.

- :func:`sample_set` draws exactly INPC images per class, reproducibly from a seed;
- :class:`GeneratorDataset` is a map-style torch Dataset of INPC x C (image, label) pairs,
  generated lazily in batches; with ``fresh=True`` it draws new noise every epoch, in any
  DataLoader set-up (workers, persistence, shuffling; :class:`EpochSampler` for
  distributed runs and exact epochs);
- :class:`FreshSamples` is the training data of DiM's deployment protocol (new samples
  every step, the same number of images per epoch);
- :class:`Selector` and the rules of ``CANDIDATE_RULES`` (herding, kcenter, kmeans,
  confidence) keep INPC of M x INPC draws per class (``candidates=M``).
"""

from gencond.serve.candidates import CANDIDATE_RULES, Selector, register_candidate_rule
from gencond.serve.sampling import EpochSampler, FreshSamples, GeneratorDataset, class_list, sample_set

__all__ = ["CANDIDATE_RULES", "EpochSampler", "FreshSamples", "GeneratorDataset", "Selector", "class_list",
           "register_candidate_rule", "sample_set"]
