"""Training machinery below the methods and the evaluator: network training (evaluation
networks, networks trained on real batches between other updates) and the generator
trainer that DiM and the codebook generator fill in with small hooks."""

from gencond.training.networks import (
    IndexedData,
    RealBatchConfig,
    RealBatchTrainer,
    TrainConfig,
    TrainingData,
    classification_loss,
    cutmix,
    resolve_device,
    test_accuracy,
    train_and_test,
    train_network,
)

__all__ = [
    "IndexedData",
    "RealBatchConfig",
    "RealBatchTrainer",
    "TrainConfig",
    "TrainingData",
    "classification_loss",
    "cutmix",
    "resolve_device",
    "test_accuracy",
    "train_and_test",
    "train_network",
]
