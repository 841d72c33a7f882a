"""Train-on-synthetic evaluation: train fresh networks on a condensed set, test on real data."""

from gencond.evaluate.fidelity import class_fidelity
from gencond.evaluate.protocol import EvalConfig, RowResult, TrainingSet, format_table, run_eval, run_protocol
from gencond.training.networks import IndexedData, TrainConfig, cutmix, resolve_device, test_accuracy, train_and_test, train_network

__all__ = [
    "class_fidelity",
    "EvalConfig",
    "IndexedData",
    "RowResult",
    "TrainConfig",
    "TrainingSet",
    "cutmix",
    "format_table",
    "resolve_device",
    "run_eval",
    "run_protocol",
    "test_accuracy",
    "train_and_test",
    "train_network",
]
