"""Class-conditional generators: a small base class and the registry of architectures.

A leaf module: the artifact layer looks architectures up here to rebuild a saved
generator, and every generator module registers itself here.

Every generator maps (latent, label) to an image in [-1, 1]. What a latent is belongs to
the architecture, so sampling asks the network for it: :meth:`latents` returns the
latents of images at given positions within their class's set (``slots``), or fresh
ones (``slots=None``). DiM's generator draws Gaussian noise whatever the slot; a
codebook generator returns its learned codes for the first slots.

Both accept a ``truncation`` threshold psi > 0 (BigGAN's truncation trick, Brock et al.
2019): the Gaussian part of a latent is drawn from N(0, 1) truncated to [-psi, psi], which
trades diversity for images nearer the modes of their class.
"""

from __future__ import annotations

import functools
import inspect

import torch
from torch import nn

GENERATOR_ARCHITECTURES: dict[str, type[ClassConditionalGenerator]] = {}


def gaussian_latents(count: int, dim: int, generator: torch.Generator, truncation: float = 0.0) -> torch.Tensor:
    """(count, dim) draws of N(0, 1); with ``truncation`` psi > 0, of N(0, 1) truncated to
    [-psi, psi], by the inverse CDF (one uniform per entry, so the draw count, and with it
    the stream, does not depend on psi). psi = 0 keeps plain ``torch.randn``."""
    if truncation <= 0:
        return torch.randn(count, dim, generator=generator)
    edge = torch.special.ndtr(torch.tensor(-float(truncation), dtype=torch.float64))
    uniform = torch.rand(count, dim, generator=generator, dtype=torch.float64)
    return torch.special.ndtri(edge + uniform * (1 - 2 * edge)).clamp(-truncation, truncation).float()


def register_generator(name: str):
    """Register a :class:`ClassConditionalGenerator` subclass under ``name``."""

    def decorator(cls):
        GENERATOR_ARCHITECTURES[name] = cls
        cls.architecture = name
        return cls

    return decorator


class ClassConditionalGenerator(nn.Module):
    """Base of gencond's generators.

    The constructor's arguments are captured as :meth:`config` (as diffusers'
    ``register_to_config`` does), so a saved generator is rebuilt from exactly what built
    it. Tensors that a constructor needs (a codebook generator's class features) are
    weights, not config: pass shapes to the constructor and load values as state.
    """

    architecture: str = ""
    num_classes: int
    latent_dim: int

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def recording_init(self, *args, **kw):
            bound = inspect.signature(init).bind(self, *args, **kw)
            bound.apply_defaults()
            arguments = dict(list(bound.arguments.items())[1:])
            init(self, *args, **kw)
            if type(self) is cls:
                self._config = arguments

        cls.__init__ = recording_init

    def config(self) -> dict:
        return dict(self._config)

    def latents(self, slots: torch.Tensor | None, count: int, generator: torch.Generator,
                truncation: float = 0.0) -> torch.Tensor:
        """``count`` latents (on the CPU) for images at positions ``slots`` within their
        class's set, or fresh ones when ``slots`` is None. Default: N(0, I) noise,
        truncated to [-``truncation``, ``truncation``] when that is positive."""
        return gaussian_latents(count, self.latent_dim, generator, truncation)

    def forward(self, latents: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
