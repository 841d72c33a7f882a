"""gencond: generative-model dataset condensation.

The calls most users need are here, imported on first use (so ``import gencond`` stays
light)::

    generator = gencond.load_generator("checkpoints/dim_digits")   # a DiMGenerator (a diffusers ModelMixin)
    images = gencond.sample_set(generator, inpc=10, seed=0)          # a CondensedSet of 10 images per class
    dataset = gencond.GeneratorDataset(generator, inpc=50, fresh=True)  # a torch Dataset, new images every epoch
"""

__version__ = "0.2.0"

from gencond.errors import GencondError

_LAZY = {
    "load_generator": "gencond.models",
    "ConditionalGenerator": "gencond.models",
    "DiMGenerator": "gencond.models",
    "CodebookGenerator": "gencond.models",
    "DiffusionGenerator": "gencond.models",
    "CondensedSet": "gencond.artifacts",
    "sample_set": "gencond.serve",
    "GeneratorDataset": "gencond.serve",
}

__all__ = ["GencondError", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gencond' has no attribute {name!r}")
