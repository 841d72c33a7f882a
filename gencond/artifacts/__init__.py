"""Artifacts: the condensed set file (generator folders are the generators' own
``save_pretrained`` / ``from_pretrained``, in :mod:`gencond.models.generators`)."""

from gencond.artifacts.condensed import CondensedSet, check_compatible

__all__ = ["CondensedSet", "check_compatible"]
