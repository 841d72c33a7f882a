"""What every condensation run shares: which data, how many images per class, where the
condensed set goes, and the runner behind ``gencond condense METHOD``.

Selection methods return dataset indices; pixel methods return a
:class:`~gencond.artifacts.CondensedSet`. Either way ``condense`` writes the common file
that ``gencond eval --condensed`` reads.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gencond.artifacts import CondensedSet
from gencond.config import check_reused
from gencond.data import DataConfig, DatasetSplits
from gencond.errors import GencondError
from gencond.methods._registry import get_method


@dataclass
class CondenseConfig(DataConfig):
    """The fields every ``gencond condense`` run has."""

    ipc: int = field(default=10, metadata={"help": "images per class to produce"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    output: str = field(default="", metadata={"help": "condensed set file (default runs/condensed/METHOD_DATASET_ipcN.safetensors)"})

    def check(self) -> None:
        if self.ipc <= 0:
            raise GencondError(f"images per class must be positive, got {self.ipc}")


def default_output(method: str, cfg: CondenseConfig) -> Path:
    dataset = Path(cfg.dataset.removeprefix("npz:")).stem
    return Path("runs/condensed") / f"{method}_{dataset}_ipc{cfg.ipc}.safetensors"


def run_method(name: str, cfg: CondenseConfig, splits: DatasetSplits) -> CondensedSet:
    """Run a selection or pixel method on loaded data; returns the condensed set."""
    method = get_method(name)
    cfg.check()
    train = splits.train
    if method.kind == "selection":
        indices = method.fn(train, cfg.ipc, cfg.seed, cfg)
        images, labels = train.batch(indices)
        return CondensedSet(images, labels, train.info, method=name, config=asdict(cfg))
    if method.kind == "pixel":
        return method.fn(cfg, splits)
    raise GencondError(f"{name} trains a generator; use gencond train {name}")


def condense(name: str, cfg: CondenseConfig, log=print) -> tuple[Path, CondensedSet, float]:
    """Load the data, run ``name``, write the condensed set; returns (path, set, seconds)."""
    splits = cfg.load_splits()
    start = time.perf_counter()
    condensed = run_method(name, cfg, splits)
    seconds = time.perf_counter() - start
    condensed.config = {**condensed.config, "condense_seconds": round(seconds, 2)}
    path = Path(cfg.output) if cfg.output else default_output(name, cfg)
    condensed.save(path)
    log(f"{name}: {len(condensed)} images ({cfg.ipc} per class) of {splits.info.name} in {seconds:.1f} s -> {path}")
    return path, condensed, seconds


def condense_or_reuse(name: str, cfg: CondenseConfig, reuse: bool) -> CondensedSet:
    """The set at ``cfg.output`` when ``reuse`` and it was condensed by ``name`` from this very
    config, wherever it ran (its seconds are in its ``condense_seconds``); otherwise condense it
    now. A file made by another method or config ends with one line naming what differs, rather
    than being scored as this one."""
    path = Path(cfg.output)
    if not (reuse and path.is_file()):
        return condense(name, cfg)[1]
    condensed = CondensedSet.load(path)
    check_reused({**condensed.config, "method": condensed.method}, cfg, str(path), ("device", "output"), method=name)
    return condensed
