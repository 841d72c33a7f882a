"""gencond: generative-model dataset condensation."""

__version__ = "0.1.0"

from gencond.errors import GencondError

__all__ = ["GencondError", "__version__"]
