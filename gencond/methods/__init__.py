"""Condensation and selection methods, registered by name with a decorator.

Three kinds, each with its own call:

- *selection* picks real images: ``fn(images: ImageSet, ipc, seed, config=None) -> indices``;
- *pixel* learns the images themselves: ``fn(config, splits: DatasetSplits) -> CondensedSet``;
- *generator* trains a generator: ``fn(config, resume=False) -> folder``.

``config`` is an instance of the method's registered config dataclass.
"""

from gencond.methods import codebook, coresets, diffusion, dim, dm, dsa, idc  # noqa: F401,E402  (registration)
from gencond.methods._registry import Method, get_method, list_methods, register_method

__all__ = ["Method", "get_method", "list_methods", "register_method"]
