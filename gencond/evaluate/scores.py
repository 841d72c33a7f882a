"""DD-Ranking's scores of a condensed set (NUS-HPC-AI-Lab/DD-Ranking), from accuracies in
percent measured under one protocol:

- HLR (hard label recovery) = acc(whole training split, hard labels) - acc(set, hard labels);
- IOR (improvement over random) = acc(set) - acc(random real images at the same INPC),
  both with the same labels (hard, or the same teacher's soft labels);
- LRS (label-robust score): alpha = w * IOR - (1 - w) * HLR, w = 0.5, reported as
  (e^alpha - e^-1) / (e - e^-1);
- ARS (augmentation-robust score): beta = w * IOR(with augmentation) + (1 - w) * IOR(without),
  w = 0.5, reported the same way.

The normalisation maps alpha in [-1, 1] to [0, 1], so alpha and beta are computed from
accuracies as fractions (points / 100) and the scores are given in percent. DD-Ranking's
code (``metrics/hard_label.py``, ``soft_label.py``, ``aug_robust.py``) applies the formula to
accuracies in percent, where it leaves [0, 1]; ``percent_inputs=True`` reproduces that.
"""

from __future__ import annotations

import math

WEIGHT = 0.5


def normalised_exp(x: float) -> float:
    """(e^x - e^-1) / (e - e^-1): 0 at x = -1, 1 at x = 1."""
    return (math.exp(x) - math.exp(-1)) / (math.exp(1) - math.exp(-1))


def _score(x_points: float, percent_inputs: bool) -> float:
    return normalised_exp(x_points) if percent_inputs else 100 * normalised_exp(x_points / 100)


def label_robust_score(ior: float, hlr: float, weight: float = WEIGHT, percent_inputs: bool = False) -> float:
    """LRS (%) from IOR and HLR in percentage points (``percent_inputs``: DD-Ranking's code
    literally, a unitless number)."""
    return _score(weight * ior - (1 - weight) * hlr, percent_inputs)


def augmentation_robust_score(ior_with: float, ior_without: float, weight: float = WEIGHT,
                              percent_inputs: bool = False) -> float:
    """ARS (%) from the IOR with and without the training augmentation, in points."""
    return _score(weight * ior_with + (1 - weight) * ior_without, percent_inputs)
