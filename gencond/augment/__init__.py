"""Augmentations: differentiable siamese augmentation (DSA)."""

from gencond.augment.dsa import (
    DEFAULT_STRATEGY,
    DSA,
    MODES,
    OPERATIONS,
    AugmentDraw,
    DSAParams,
    GroupDraw,
    identity_params,
)

__all__ = ["DEFAULT_STRATEGY", "DSA", "MODES", "OPERATIONS", "AugmentDraw", "DSAParams", "GroupDraw", "identity_params"]
