"""Train-on-synthetic evaluation: train fresh networks on a condensed set, test on real data.
The network-training primitives it uses live in :mod:`gencond.engine` and are re-exported
here, where evaluation code looks for them."""

from gencond.engine.networks import (
    IndexedData,
    TrainConfig,
    cutmix,
    resolve_device,
    test_accuracy,
    train_and_test,
    train_network,
)
from gencond.evaluate.fidelity import class_fidelity
from gencond.evaluate.protocol import (
    EvalConfig,
    FreshSamples,
    RowResult,
    TrainingSet,
    format_table,
    run_eval,
    run_protocol,
)

__all__ = ["EvalConfig", "FreshSamples", "IndexedData", "RowResult", "TrainConfig", "TrainingSet", "class_fidelity",
           "cutmix", "format_table", "resolve_device", "run_eval", "run_protocol", "test_accuracy", "train_and_test",
           "train_network"]
