"""The generator trainer that every generator method fills in with small hooks (DiM, the
codebook generator), and choosing a generator state on a validation split."""

from gencond.training.trainer import GeneratorConfig, GeneratorTrainer, run_trainer

__all__ = ["GeneratorConfig", "GeneratorTrainer", "run_trainer"]
