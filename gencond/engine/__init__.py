"""What training, evaluation and serving share, one layer below them: training and testing
networks (``TrainConfig``, ``train_network``, ``test_accuracy``), reference networks trained
on real data (teachers, selection networks), devices, batch norm over every process, and
drawing fixed sets from a generator (``sample_set``, candidate selection)."""

from gencond.engine.candidates import CANDIDATE_RULES, Selector, register_candidate_rule
from gencond.engine.networks import (
    Evaluated,
    IndexedData,
    RealBatchConfig,
    RealBatchTrainer,
    ReferenceNetwork,
    TrainConfig,
    TrainingData,
    classification_loss,
    cutmix,
    real_data_network,
    resolve_device,
    teacher_logits,
    test_accuracy,
    train_and_test,
    train_network,
)
from gencond.engine.sampling import class_list, sample_set

__all__ = [
    "CANDIDATE_RULES",
    "Evaluated",
    "IndexedData",
    "RealBatchConfig",
    "RealBatchTrainer",
    "ReferenceNetwork",
    "Selector",
    "TrainConfig",
    "TrainingData",
    "class_list",
    "classification_loss",
    "cutmix",
    "real_data_network",
    "register_candidate_rule",
    "resolve_device",
    "sample_set",
    "teacher_logits",
    "test_accuracy",
    "train_and_test",
    "train_network",
]
