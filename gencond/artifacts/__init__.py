"""Artifacts: condensed set files and generator folders, written atomically."""

from gencond.artifacts.condensed import CondensedSet
from gencond.artifacts.generator import ConditionalGenerator, load_generator, read_generator_config, save_pretrained
from gencond.artifacts.io import atomic_path, output_lock, write_json

__all__ = [
    "CondensedSet",
    "ConditionalGenerator",
    "atomic_path",
    "load_generator",
    "output_lock",
    "read_generator_config",
    "save_pretrained",
    "write_json",
]
