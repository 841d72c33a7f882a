"""Artifacts: condensed set files (and, with the generator issue, generator folders)."""

from gencond.artifacts.condensed import CondensedSet
from gencond.artifacts.io import atomic_path, write_json

__all__ = ["CondensedSet", "atomic_path", "write_json"]
