"""Artifacts: the condensed set file (generator folders are the generators' own
``save_pretrained`` / ``from_pretrained``, in :mod:`gencond.models.generators`)."""

from gencond.artifacts.condensed import SHARD_INDEX, CondensedSet, check_compatible, write_shard_index

__all__ = ["SHARD_INDEX", "CondensedSet", "check_compatible", "write_shard_index"]
