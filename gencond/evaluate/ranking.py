"""DC-BENCH's architecture-ranking (NAS) protocol: do networks trained on the condensed
data rank architectures as networks trained on the whole training split do?

``networks`` genotypes are drawn from the NAS-Bench-201 space (``cells_per_stage`` cells
per stage; DC-BENCH reduces NAS-Bench-201's 5 to 1). Each is trained ``net_epochs`` on the whole
training split as ground truth (trained here, offline) and ``set_epochs`` on every condensed
or selected set: a set smaller than the batch takes one SGD step per epoch, so it needs the
evaluation's epoch count, not the ground truth's (at 10 epochs digits sets of 10-100 images
left every network at chance; experiments/architecture_ranking/). All are
scored on the validation split carved from the training data, so the test split plays no
part. Reported per set: Spearman's rank correlation between its accuracies and the ground
truth, and the ground-truth accuracy of the architecture it ranks first (beside the best
ground-truth accuracy of the sample).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.stats import spearmanr

from gencond.data import DatasetSplits
from gencond.engine.networks import TrainConfig, train_and_test
from gencond.errors import GencondError
from gencond.evaluate.protocol import TrainingSet
from gencond.models import create_network
from gencond.models.cells import sample_genotypes


@dataclass
class RankingConfig:
    networks: int = field(default=0, metadata={"help": "NAS-Bench-201 genotypes ranked (0 = protocol off)"})
    net_epochs: int = field(default=50, metadata={
        "help": "epochs each ranked network trains on the whole training split, the ground truth (DC-BENCH: 50)"})
    set_epochs: int = field(default=0, metadata={
        "help": "epochs each ranked network trains on a condensed or selected set (0 = the benchmark's train.epochs; "
                "a set smaller than the batch takes one step per epoch)"})
    cells_per_stage: int = field(default=1, metadata={"help": "cells per stage (DC-BENCH: 1; NAS-Bench-201: 5)"})

    def check(self, splits: DatasetSplits) -> None:
        if self.networks < 0 or self.net_epochs < 1 or self.set_epochs < 0 or self.cells_per_stage < 1:
            raise GencondError("architecture ranking needs networks >= 0, net_epochs >= 1, set_epochs >= 0 and "
                               "cells_per_stage >= 1")
        if self.networks == 1:
            raise GencondError("architecture ranking needs at least 2 networks to rank")
        if self.networks and splits.validation is None:
            raise GencondError("architecture ranking scores on a validation split: set validation_per_class > 0")


def rank_correlation(a: list[float], b: list[float]) -> float:
    """Spearman's rho (ties ranked by their average); 0 when either side is constant."""
    if len(set(a)) < 2 or len(set(b)) < 2:
        return 0.0
    return float(spearmanr(a, b).statistic)


@dataclass(frozen=True)
class RankingCell:
    """One ranked network: ``genotype`` trained on ``training_set`` (``kind`` 'full' for the
    ground truth, 'sets' for a condensed or selected set), identified by ``key``."""

    kind: str
    training_set: TrainingSet
    genotype: str
    key: str
    train: Callable[[], tuple[float, float]]  # (validation accuracy %, training seconds)


def rank_architectures(cfg: RankingConfig, splits: DatasetSplits, sets: list[TrainingSet], full: TrainingSet,
                       train: TrainConfig, device: torch.device, seed: int,
                       accuracies: Callable[[list[RankingCell]], dict[str, float]]) -> dict:
    """The protocol over ``sets`` against ``full``. ``accuracies(cells)`` returns every
    cell's accuracy by key, training (and storing) the ones it does not have yet; all cells
    are handed over at once so that it can train them side by side."""
    info = splits.info
    genotypes = sample_genotypes(cfg.networks, seed)
    epochs = {"full": cfg.net_epochs, "sets": cfg.set_epochs or train.epochs}

    def cell(kind: str, training_set: TrainingSet, genotype: str) -> RankingCell:
        recipe = dataclasses.replace(train, epochs=epochs[kind])
        key = json.dumps({"ranking": genotype, "cells": cfg.cells_per_stage, "epochs": recipe.epochs,
                          "set": training_set.name, "ipc": training_set.ipc, "seed": seed}, sort_keys=True)
        return RankingCell(kind, training_set, genotype, key, lambda: train_and_test(
            lambda: create_network("nb201_cell", info.num_classes, info.channels, info.image_size, genotype=genotype,
                                   cells_per_stage=cfg.cells_per_stage),
            training_set.make(seed), splits.validation, recipe, device, seed))

    grid = [[cell(kind, ts, g) for g in genotypes] for kind, ts in [("full", full)] + [("sets", ts) for ts in sets]]
    found = accuracies([c for row in grid for c in row])
    truth = [found[c.key] for c in grid[0]]
    report = {"genotypes": genotypes, "scored_on": "validation split", "full_data": truth, "sets": []}
    for training_set, row in zip(sets, grid[1:]):
        scores = [found[c.key] for c in row]
        top = int(np.argmax(scores))
        report["sets"].append({"training_set": training_set.name, "ipc": training_set.ipc, "accuracies": scores,
                               "spearman": rank_correlation(scores, truth), "top1_genotype": genotypes[top],
                               "top1_full_data_accuracy": truth[top], "best_full_data_accuracy": max(truth)})
    return report
