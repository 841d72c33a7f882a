"""``gencond bench``: one benchmark for generators and pixel sets alike.

A grid of cells (training set x images per class x architecture x augmentation x seed),
each one network trained from scratch and tested on the real test split (DC-BENCH's
protocols: augmentation robustness, transfer across architectures, the INPC sweep).
Finished cells are appended to a cache as they end, so an interrupted run resumes where
it stopped; the whole-training-set cells (for HLR) go to a cache shared by every
benchmark of the same dataset and protocol.

A set specification may carry serving options after ``?`` (``&``-separated): a generator's
``candidates=M`` and ``rule=R`` (its fixed set kept by candidate selection from M x INPC
draws, in the embedding of a selection network trained ``selector_epochs`` on the real
training split), ``truncation=PSI`` (latents truncated at PSI), a diffusion generator's
``sampler=ddim|dpm``, ``steps=N``, ``guidance=W``, ``precision=P`` (the UNet's autocast
while sampling) and ``clip=consistent|image`` (DDIM's clipping rule), instead of those saved
with it, and
``latents=d3hr`` with ``strength=S`` (fixed sets from D3HR's chosen latents, fitted to DDIM
inversions of the real training split: :mod:`gencond.engine.d3hr`), and for every set
``labels=soft`` (trained on a teacher's logits: a condensed file's stored ones, otherwise
those of a ``teacher_arch`` trained ``teacher_epochs`` on the real training split; a column
of its own, never ranked with hard labels).

Metrics, in percentage points under the same protocol (DD-Ranking's definitions):
IOR = accuracy - accuracy of random real images at the same INPC; HLR = accuracy of the
whole training split - accuracy. DC-BENCH and DD-Ranking report the best accuracy over
training epochs (chosen on the test set); every figure here is the final accuracy, and
``best_every`` adds that best as a labelled extra column only.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from gencond.data import DataConfig, DatasetSplits, random_subset
from gencond.engine.candidates import CANDIDATE_RULES
from gencond.engine.candidates import Selector as SelectionNetwork
from gencond.engine.d3hr import D3HR, D3HR_STRENGTH, fit_latent_gaussians
from gencond.engine.networks import (
    AUGMENTATIONS,
    Evaluated,
    TrainConfig,
    real_data_network,
    resolve_device,
    test_accuracy,
)
from gencond.engine.sampling import sample_set
from gencond.errors import GencondError
from gencond.evaluate.fidelity import class_fidelity
from gencond.evaluate.image_fidelity import (
    EXTRACTORS,
    FidelityExtractor,
    per_class_fidelity,
    register_task_extractor,
)
from gencond.evaluate.protocol import (
    FULL,
    PROTOCOLS,
    RANDOM,
    RowResult,
    Selector,
    TrainingSet,
    condensed_sets,
    evaluate_cell,
    format_table,
    generator_sets,
    selection_sets,
)
from gencond.evaluate.ranking import RankingCell, RankingConfig, rank_architectures
from gencond.evaluate.report import BenchmarkReport
from gencond.evaluate.scores import augmentation_robust_score, label_robust_score
from gencond.files import atomic_path
from gencond.models import ConditionalGenerator, check_architecture, load_generator
from gencond.models.diffusion import DDIM_CLIPS, SAMPLERS
from gencond.runtime import PRECISIONS, forked_map

FILE_KINDS = ("condensed", "generator")
SET_LABELS = ("hard", "soft")
REFERENCE_ARCH = "convnet3"  # the architecture the condensed data was made with; "transfer" averages the others


@dataclass
class BenchConfig(DataConfig):
    """A benchmark grid; the evaluation recipe is ``train`` with each ``augment`` in turn."""

    sets: list[str] = field(default_factory=lambda: [RANDOM], metadata={
        "help": "training sets: random, a selection rule (herding, kcenter, ...), NAME=condensed:FILE, "
                "NAME=generator:FOLDER, each optionally with ?OPTION=VALUE&... (generators: candidates, rule, "
                "truncation; diffusion generators: sampler, steps, guidance, precision, latents=d3hr, strength; "
                "every set: labels=soft); random real images are always included"})
    inpc: list[int] = field(default_factory=lambda: [1, 10], metadata={
        "help": "images per class of real subsets and generators (condensed files have their own)"})
    arch: list[str] = field(default_factory=lambda: [REFERENCE_ARCH], metadata={"help": "evaluation architectures"})
    augment: list[str] = field(default_factory=lambda: ["dsa"], metadata={
        "help": f"evaluation augmentations: {', '.join(AUGMENTATIONS)}"})
    protocol: list[str] = field(default_factory=lambda: ["fixed"], metadata={
        "help": "generator protocols: fixed, fresh, pool"})
    pool_factor: int = field(default=10, metadata={"help": "the pool protocol's pool, in multiples of INPC"})
    seeds: int = field(default=3, metadata={"help": "evaluation seeds per cell (from seed on): network, order, subset"})
    score_on: str = field(default="test", metadata={"help": "test, or validation: score every cell on the split "
                                                         "carved by validation_per_class (for choosing settings; "
                                                         "the test split is then not read)"})
    full_data: bool = field(default=True, metadata={"help": "also train on the whole training split (HLR)"})
    output_dir: str = field(default="runs/bench", metadata={"help": "results.json, table.md, plots, cells.jsonl"})
    full_data_epochs: int = field(default=0, metadata={
        "help": "epochs on the whole training split (0 = train.epochs; it needs far fewer than a small set)"})
    full_cache: str = field(default="runs/bench/full-data.jsonl", metadata={
        "help": "cache of whole-training-set cells, shared across benchmarks"})
    fidelity: bool = field(default=False, metadata={"help": "also measure each generator's image fidelity (FID, KID, "
                                                            "IS, precision/recall) and class fidelity"})
    fidelity_inpc: int = field(default=100, metadata={"help": "generated and real images per class compared"})
    fidelity_extractor: str = field(default="task", metadata={
        "help": "task (a ConvNet-3 trained on the real training split) or inception (needs --inception-weights)"})
    fidelity_net_epochs: int = field(default=10, metadata={"help": "epochs of the task extractor / class-fidelity net"})
    inception_weights: str = field(default="", metadata={"help": "local InceptionV3 weights for torch-fidelity"})
    selector_epochs: int = field(default=1, metadata={"help": "epochs the selection network of candidates=M sets "
                                                              "(the coresets' ConvNet-3) trains on the real training "
                                                              "split"})
    teacher_arch: str = field(default="convnet3", metadata={"help": "the teacher of labels=soft sets"})
    teacher_epochs: int = field(default=10, metadata={"help": "epochs the teacher trains on the real training split"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    workers: int = field(default=1, metadata={
        "help": "processes training cells side by side, CPU only (each gets threads / workers threads; on few cores "
                "small networks train faster side by side than with more threads each)"})
    best_every: int = field(default=0, metadata={
        "help": "also test every N epochs and report the best accuracy over training as a labelled extra column "
                "(DC-BENCH's and DD-Ranking's figure, chosen on the test split, so never ranked; 0 = off)"})
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=300))
    ranking: RankingConfig = field(default_factory=RankingConfig)

    def check(self) -> None:
        if self.workers < 1:
            raise GencondError(f"workers must be >= 1, got {self.workers}")
        if self.best_every < 0:
            raise GencondError(f"best_every must be >= 0, got {self.best_every}")
        if self.score_on not in ("test", "validation") or (self.score_on == "validation"
                                                            and self.validation_per_class <= 0):
            raise GencondError(f"score_on must be test, or validation with validation_per_class > 0; got "
                               f"{self.score_on!r} with validation_per_class {self.validation_per_class}")
        if self.full_data_epochs < 0:
            raise GencondError(f"full_data_epochs must be >= 0, got {self.full_data_epochs}")
        if self.seeds <= 0 or not self.inpc or any(n <= 0 for n in self.inpc):
            raise GencondError(f"seeds and images per class must be positive, got {self.seeds}, {self.inpc}")
        if not self.arch or not self.augment:
            raise GencondError("the grid names no architecture or no augmentation: give at least one of each")
        for arch in self.arch:
            check_architecture(arch)
        for augment in self.augment:
            dataclasses.replace(self.train, augment=augment).check()
        unknown = [p for p in self.protocol if p not in PROTOCOLS]
        if unknown or not self.protocol:
            raise GencondError(f"unknown protocol {unknown[0] if unknown else '(none)'!r}; choose from {', '.join(PROTOCOLS)}")
        if self.pool_factor < 1:
            raise GencondError(f"pool_factor must be >= 1, got {self.pool_factor}")
        for entry in self.sets:
            parse_set(entry)
        check_architecture(self.teacher_arch)
        if self.selector_epochs < 0 or self.teacher_epochs < 0:
            raise GencondError(f"selector_epochs and teacher_epochs must be >= 0, got {self.selector_epochs}, "
                               f"{self.teacher_epochs}")
        if self.fidelity_extractor not in EXTRACTORS:
            raise GencondError(f"unknown fidelity extractor {self.fidelity_extractor!r}; choose from {', '.join(EXTRACTORS)}")
        if self.fidelity and self.fidelity_extractor == "inception":
            FidelityExtractor.inception(self.inception_weights)
        if self.ranking.networks and not self.full_data:
            raise GencondError("architecture ranking needs the whole training split as ground truth (full_data)")
        if self.fidelity_inpc < 10 or self.fidelity_net_epochs < 1:
            raise GencondError("fidelity needs at least 10 images per class and a trained extractor (epochs >= 1)")


@dataclass(frozen=True)
class SetSpec:
    """One ``sets`` entry: a selection rule (``kind`` 'selection'), a condensed file or a
    generator folder, with its serving options (``candidates``, ``rule``, ``truncation``,
    ``labels``; see the module docstring)."""

    name: str
    kind: str
    source: str
    candidates: int = 1
    rule: str = "herding"
    truncation: float = 0.0
    labels: str = "hard"
    sampler: str = ""
    steps: int = 0
    guidance: float = -1.0
    precision: str = ""
    clip: str = ""
    latents: str = "noise"
    strength: float = D3HR_STRENGTH

    @property
    def options(self) -> dict[str, str]:
        """The options that differ from the defaults, as written in the entry."""
        given = {"candidates": self.candidates, "rule": self.rule if self.candidates > 1 else "herding",
                 "truncation": self.truncation, "labels": self.labels, "sampler": self.sampler, "steps": self.steps,
                 "guidance": self.guidance, "precision": self.precision, "clip": self.clip, "latents": self.latents,
                 "strength": self.strength}
        return {k: f"{v:g}" if isinstance(v, float) else str(v) for k, v in given.items() if v != SET_DEFAULTS[k]}

    @property
    def sampling(self) -> dict:
        """A diffusion generator's ``with_sampler`` settings (None keeps the saved one)."""
        return {"sampler": self.sampler or None, "steps": self.steps or None,
                "guidance_scale": self.guidance if self.guidance >= 0 else None,
                "mixed_precision": self.precision or None, "ddim_clip": self.clip or None}

    @property
    def served_name(self) -> str:
        """The generator as it draws images: its name and the options that change what a
        latent becomes (truncation, the sampler's settings), not how a fixed set is chosen."""
        shaping = [f"{k}={v}" for k, v in self.options.items()
                   if k in ("truncation", "sampler", "steps", "guidance", "precision", "clip")]
        return " ".join([self.name, *shaping])

    @property
    def entry(self) -> str:
        base = self.source if self.kind == "selection" else f"{self.name}={self.kind}:{self.source}"
        return base + ("?" + "&".join(f"{k}={v}" for k, v in self.options.items()) if self.options else "")


# sampler, steps, guidance, precision and clip (a diffusion generator's): "", 0, -1, "" and "" keep the saved ones
SET_DEFAULTS = {"candidates": 1, "rule": "herding", "truncation": 0.0, "labels": "hard", "sampler": "", "steps": 0,
                "guidance": -1.0, "precision": "", "clip": "", "latents": "noise", "strength": D3HR_STRENGTH}
LATENT_SOURCES = ("noise", "d3hr")
SET_OPTIONS = {"selection": ("labels",), "condensed": ("labels",), "generator": tuple(SET_DEFAULTS)}


def parse_set(entry: str) -> SetSpec:
    """A ``sets`` entry -> :class:`SetSpec`; a malformed one ends with one line."""
    base, _, query = entry.partition("?")
    name, sep, rest = base.partition("=")
    if not sep:
        if ":" in base or not base:
            raise GencondError(f"training set {entry!r}: expected a selection rule, NAME=condensed:FILE or "
                               f"NAME=generator:FOLDER")
        spec = SetSpec(base, "selection", base)
    else:
        kind, colon, source = rest.partition(":")
        if not (name and colon and source) or kind not in FILE_KINDS:
            raise GencondError(f"training set {entry!r}: expected NAME=condensed:FILE or NAME=generator:FOLDER")
        spec = SetSpec(name, kind, source)
    return dataclasses.replace(spec, **set_options(entry, spec.kind, query)) if query else spec


def set_options(entry: str, kind: str, query: str) -> dict:
    """The ``?key=value&...`` options of a set entry, checked."""
    options = {}
    for item in query.split("&"):
        key, eq, value = item.partition("=")
        if not eq or key not in SET_OPTIONS[kind]:
            raise GencondError(f"training set {entry!r}: {item!r} is not an option of a {kind} set "
                               f"(options: {', '.join(f'{k}=...' for k in SET_OPTIONS[kind])})")
        try:
            options[key] = type(SET_DEFAULTS[key])(value)
        except ValueError:
            raise GencondError(f"training set {entry!r}: {key} must be a {type(SET_DEFAULTS[key]).__name__}, "
                               f"got {value!r}") from None
    candidates, rule = options.get("candidates", 1), options.get("rule", "herding")
    if candidates < 1 or rule not in CANDIDATE_RULES or not options.get("truncation", 0.0) >= 0:
        raise GencondError(f"training set {entry!r}: candidates must be >= 1, rule one of "
                           f"{', '.join(CANDIDATE_RULES)} and truncation >= 0")
    if options.get("sampler", "") not in ("", *SAMPLERS) or options.get("steps", 1) < 1 \
            or not options.get("guidance", 0.0) >= 0 or options.get("precision", "") not in ("", *PRECISIONS) \
            or options.get("clip", "") not in ("", *DDIM_CLIPS):
        raise GencondError(f"training set {entry!r}: sampler must be one of {', '.join(SAMPLERS)}, steps >= 1, "
                           f"guidance >= 0, precision one of {', '.join(PRECISIONS)} and clip one of "
                           f"{', '.join(DDIM_CLIPS)}")
    if options.get("latents", "noise") not in LATENT_SOURCES or not 0 < options.get("strength", 1.0) <= 1:
        raise GencondError(f"training set {entry!r}: latents must be one of {', '.join(LATENT_SOURCES)} and "
                           "strength in (0, 1]")
    if options.get("latents") == "d3hr" and candidates > 1 or "strength" in options and options.get("latents") != "d3hr":
        raise GencondError(f"training set {entry!r}: latents=d3hr and candidates both choose the fixed set (use one); "
                           "strength is an option of latents=d3hr")
    if options.get("labels", "hard") not in SET_LABELS:
        raise GencondError(f"training set {entry!r}: labels must be hard or soft, got {options['labels']!r}")
    return options


@dataclass
class BenchRow:
    """A training set at one INPC, what its artifact occupies, where its cells are cached, and
    the digest of the file or folder its images come from (:func:`source_digest`)."""

    spec: SetSpec
    training_set: TrainingSet
    artifact_bytes: int | None
    cache: CellCache
    digest: str | None = None


class CellCache:
    """Finished cells, one JSON line each, appended and flushed to disk as each cell ends;
    a line cut short by a kill is dropped when the cache is opened."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records: dict[str, dict] = {}
        if not self.path.is_file():
            return
        text = self.path.read_text(encoding="utf-8", errors="replace")
        lines = [line for line in text.split("\n") if line]
        for line in lines:
            try:
                record = json.loads(line)
                self.records[record["key"]] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
        if len(self.records) != len(lines) or (text and not text.endswith("\n")):
            with atomic_path(self.path) as tmp:
                tmp.write_text("".join(json.dumps(r) + "\n" for r in self.records.values()), encoding="utf-8")

    def get(self, key: str) -> dict | None:
        return self.records.get(key)

    def put(self, key: str, accuracy: float, seconds: float, best: float | None = None, best_every: int = 0) -> None:
        record = {"key": key, "accuracy": round(accuracy, 4), "train_seconds": round(seconds, 3)}
        if best is not None:
            record |= {"best": round(best, 4), "best_every": best_every}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records[key] = record


def protocol_fingerprint(splits: DatasetSplits, train: TrainConfig) -> str:
    """Identifies the data and the recipe (all but the augmentation, a cell coordinate), so
    a cache never serves a cell trained under other settings."""
    recipe = {k: v for k, v in dataclasses.asdict(train).items() if k != "augment"}
    about = {"data": splits.info.to_dict(), "train": len(splits.train), "test": len(splits.test), "recipe": recipe}
    if splits.validation is not None and splits.test is splits.validation:
        about["scored_on"] = "validation"
    return hashlib.sha256(json.dumps(about, sort_keys=True).encode()).hexdigest()[:16]


def source_digest(spec: SetSpec) -> str | None:
    """What a condensed or generator set's images come from: the condensed file's bytes, or the
    generator's weights and its saved config without the training record. Part of the cell
    key, so a cache never serves the cells of a file since replaced at the same path (a
    retrained generator, a set condensed again)."""
    if spec.kind == "selection":
        return None
    digest = hashlib.sha256()
    files = [Path(spec.source)]
    if spec.kind == "generator":
        folder = Path(spec.source)
        config = json.loads((folder / "config.json").read_text())
        digest.update(json.dumps({k: v for k, v in config.items() if not k.startswith("_")}, sort_keys=True).encode())
        files = sorted(folder.glob("*.safetensors"))
    for file in files:
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def cell_key(fingerprint: str, row: BenchRow, arch: str, augment: str, seed: int, helpers: dict) -> str:
    """A cell's identity: its coordinates, the recipe, and the networks (selector, teacher)
    its set or labels came from, where it used one."""
    key = {"set": row.spec.entry, "protocol": row.training_set.name, "ipc": row.training_set.ipc,
           "arch": arch, "augment": augment, "seed": seed, "recipe": fingerprint}
    if row.digest:
        key["source"] = row.digest
    return json.dumps({**key, **helpers}, sort_keys=True)


class ReferenceNetworks:
    """The networks trained on the real training split that a grid's set options need,
    each trained once, when first asked for: the selection network of ``candidates`` and
    the teacher of ``labels=soft``."""

    def __init__(self, cfg: BenchConfig, splits: DatasetSplits, device: torch.device):
        self.cfg, self.splits, self.device = cfg, splits, device

    def recipe(self, name: str) -> dict:
        """How the ``selector`` or the ``teacher`` is made: network, epochs, seed."""
        cfg = self.cfg
        network, epochs = {"selector": (REFERENCE_ARCH, cfg.selector_epochs),
                           "teacher": (cfg.teacher_arch, cfg.teacher_epochs)}[name]
        return {"network": network, "epochs": epochs, "seed": cfg.seed}

    def _train(self, name: str) -> torch.nn.Module:
        made = self.recipe(name)
        return real_data_network(self.splits.train, made["network"], made["epochs"], self.device, made["seed"])

    @functools.cached_property
    def selector(self) -> SelectionNetwork:
        return SelectionNetwork(self._train("selector"), {**self.recipe("selector"),
                                                          "trained_on": "the real training split"})

    @functools.cached_property
    def teacher(self) -> torch.nn.Module:
        return self._train("teacher")

    def trained(self) -> dict:
        """What was trained, for the report; the teacher's own test accuracy is computed only
        now, after the evaluation, for context (nothing is chosen by it)."""
        about = {}
        if "selector" in self.__dict__:
            about["selector"] = self.selector.description
        if "teacher" in self.__dict__:
            about["teacher"] = {**self.recipe("teacher"),
                                "test_accuracy": round(test_accuracy(self.teacher, self.splits.test, self.device), 3)}
        return about

    def used_by(self, row: BenchRow) -> dict:
        """What the row's cells depend on besides the set itself (part of their cache keys)."""
        uses = {}
        if row.spec.candidates > 1:
            uses["selector"] = self.recipe("selector")
        if row.spec.labels == "soft" and row.training_set.soft is None:
            uses["teacher"] = self.recipe("teacher")
        return uses


def folder_bytes(folder: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file() and p.suffix in (".safetensors", ".json"))


def bench_specs(cfg: BenchConfig) -> list[SetSpec]:
    """The configured sets, random real images first (added when missing), the whole
    training split last when ``full_data``."""
    specs = [parse_set(e) for e in cfg.sets]
    if not any(s.kind == "selection" and s.source == RANDOM for s in specs):
        specs.insert(0, SetSpec(RANDOM, "selection", RANDOM))
    return specs + ([SetSpec(FULL, "selection", FULL)] if cfg.full_data else [])


def rows_of(spec: SetSpec, splits: DatasetSplits, cfg: BenchConfig, selectors: dict[str, Selector],
            device: torch.device, networks: ReferenceNetworks) -> list[tuple[TrainingSet, int | None]]:
    """(training set, artifact bytes) per INPC (per protocol for a generator)."""
    info = splits.info
    if spec.kind == "condensed":
        path = Path(spec.source)
        if not path.is_file():
            raise GencondError(f"training set {spec.name!r}: no condensed set file {path}")
        return [(ts, path.stat().st_size) for ts in condensed_sets(splits, [spec.source])]
    if spec.kind == "generator":
        if not Path(spec.source).is_dir():
            raise GencondError(f"training set {spec.name!r}: no generator folder {spec.source}")
        size = folder_bytes(spec.source)
        return [(ts, size) for ts in generator_sets(splits, spec.source, cfg.inpc, cfg.protocol, device, spec.truncation,
                                                    spec.candidates, spec.rule, lambda: networks.selector, spec.sampling,
                                                    cfg.pool_factor, d3hr_of(spec, splits))]
    if spec.source not in (RANDOM, FULL) and spec.source not in selectors:
        raise GencondError(f"training set {spec.source!r}: unknown selection rule")
    pixel_bytes = info.num_classes * info.channels * info.image_size ** 2  # 8-bit pixels, per image per class
    return [(ts, None if ts.ipc is None else ts.ipc * pixel_bytes)
            for ts in selection_sets(splits, spec.source, cfg.inpc, selectors.get(spec.source))]


def d3hr_of(spec: SetSpec, splits: DatasetSplits) -> Callable[[ConditionalGenerator], D3HR] | None:
    """A generator set's D3HR latents (``latents=d3hr``), fitted to the real training split."""
    if spec.latents != "d3hr":
        return None
    return lambda generator: D3HR(fit_latent_gaussians(generator, splits.train, spec.strength))


def bench_rows(cfg: BenchConfig, splits: DatasetSplits, selectors: dict[str, Selector],
               device: torch.device, networks: ReferenceNetworks) -> list[BenchRow]:
    cache = CellCache(Path(cfg.output_dir) / "cells.jsonl")
    full_cache = CellCache(cfg.full_cache)
    rows, seen = [], set()
    for spec in bench_specs(cfg):
        made = rows_of(spec, splits, cfg, selectors, device, networks)
        digest = source_digest(spec)
        for training_set, size in made:
            if spec.kind != "selection":
                training_set.name = training_set.name.replace("generator", spec.name) if spec.kind == "generator" \
                    else spec.name
            where = (training_set.name, training_set.ipc, spec.labels)
            if where in seen:
                raise GencondError(f"two training sets give the row {training_set.name!r} at "
                                   f"{training_set.ipc or 'all'} images per class ({spec.labels} labels): name them apart")
            seen.add(where)
            rows.append(BenchRow(spec, training_set, size, full_cache if spec.source == FULL else cache, digest))
    return rows


def row_recipe(cfg: BenchConfig, row: BenchRow, augment: str) -> TrainConfig:
    """The evaluation recipe of one row under one augmentation."""
    epochs = cfg.full_data_epochs if row.spec.source == FULL and cfg.full_data_epochs else cfg.train.epochs
    return dataclasses.replace(cfg.train, augment=augment, epochs=epochs)


@dataclass(frozen=True)
class PendingCell:
    """A network to train unless ``cache`` already holds ``key``; ``label`` names it in the progress bar."""

    cache: CellCache
    key: str
    train: Callable[[], Evaluated]
    label: str
    best_every: int = 0  # the cell is also tested every that many epochs (a cached cell without it trains again)

    def needed(self) -> bool:
        record = self.cache.get(self.key)
        return record is None or (self.best_every > 0 and record.get("best_every") != self.best_every)


def train_cells(cells: list[PendingCell], workers: int, what: str, log: Callable[[str], None]) -> None:
    """Train the cells their caches lack, ``workers`` at a time, storing each as it ends
    (progress bar over cells, with time left)."""
    pending = [c for c in cells if c.needed()]
    log(f"{len(cells)} {what}: {len(cells) - len(pending)} cached, {len(pending)} to train"
        + (f" by {workers} worker processes" if workers > 1 else ""))
    with tqdm(total=len(pending), desc=what, unit="cell", dynamic_ncols=True) as bar:
        for index, (accuracy, seconds, best) in forked_map(lambda i: pending[i].train(), len(pending), workers):
            pending[index].cache.put(pending[index].key, accuracy, seconds, best, pending[index].best_every)
            bar.set_postfix_str(f"done: {pending[index].label}")
            bar.update()


def run_cells(cfg: BenchConfig, splits: DatasetSplits, rows: list[BenchRow], device: torch.device,
              log: Callable[[str], None], networks: ReferenceNetworks) -> list[RowResult]:
    """Train every cell not yet cached, then gather one result per (row, architecture,
    augmentation) from the caches."""
    seeds = range(cfg.seed, cfg.seed + cfg.seeds)
    fingerprints = {(number, augment): protocol_fingerprint(splits, row_recipe(cfg, row, augment))
                    for number, row in enumerate(rows) for augment in cfg.augment}
    uses = [networks.used_by(row) for row in rows]
    keys = {(number, arch, augment, seed): cell_key(fingerprints[number, augment], row, arch, augment, seed, uses[number])
            for number, row in enumerate(rows) for arch in cfg.arch for augment in cfg.augment for seed in seeds}

    def pending(number: int, arch: str, augment: str, seed: int) -> PendingCell:
        row = rows[number]
        return PendingCell(row.cache, keys[number, arch, augment, seed], lambda: evaluate_cell(
            splits, row.training_set, arch, row.spec.labels, seed, row_recipe(cfg, row, augment), device,
            networks.teacher if "teacher" in uses[number] else None, cfg.best_every),
            f"{row.training_set.name} ipc={row.training_set.ipc or 'all'} {arch} {augment} seed={seed}", cfg.best_every)

    cells = [pending(*cell) for cell in keys]
    needed = {name for cell, number in zip(cells, (k[0] for k in keys)) if cell.needed()
              for name in uses[number]}
    for name in sorted(needed):  # trained here, once, before any worker process forks
        getattr(networks, name)
    train_cells(cells, cfg.workers, "cells", log)
    results = []
    for number, row in enumerate(rows):
        for arch in cfg.arch:
            for augment in cfg.augment:
                records = [row.cache.get(keys[number, arch, augment, s]) for s in seeds]
                results.append(RowResult(row.training_set.name, row.training_set.ipc, arch,
                                         [r["accuracy"] for r in records], [r["train_seconds"] for r in records],
                                         labels=row.spec.labels, augment=augment if len(cfg.augment) > 1 else "",
                                         best=[r["best"] for r in records] if cfg.best_every else None))
    return results


def improvement_metrics(results: list[RowResult]) -> dict[tuple[str, int | None, str], dict[str, float]]:
    """Per (training set, INPC, column), DD-Ranking's metrics (:mod:`gencond.evaluate.scores`):
    IOR against random real images at the same INPC under the same column; HLR against the
    whole training split, both with hard labels under the column's architecture and
    augmentation; LRS from the two; ARS where the same set was also trained without
    augmentation (``augment: none``) beside an augmented column."""
    def hard(r: RowResult) -> tuple:
        return r.ipc, r.arch, r.augment

    random = {(r.ipc, r.column): r.mean for r in results if r.name == RANDOM}
    full = {(r.arch, r.augment): r.mean for r in results if r.name == FULL and r.labels == "hard"}
    hard_means = {(r.name, *hard(r)): r.mean for r in results if r.labels == "hard"}
    metrics: dict[tuple[str, int | None, str], dict[str, float]] = {}
    for r in results:
        if r.name == FULL:
            continue
        m = metrics.setdefault((r.name, r.ipc, r.column), {})
        if (r.ipc, r.column) in random:
            m["ior"] = r.mean - random[(r.ipc, r.column)]
        if (r.arch, r.augment) in full and (r.name, *hard(r)) in hard_means:
            m["hlr"] = full[(r.arch, r.augment)] - hard_means[(r.name, *hard(r))]
        if "ior" in m and "hlr" in m:
            m["lrs"] = label_robust_score(m["ior"], m["hlr"])
    for r in results:
        if r.augment in ("", "none") or r.name == FULL:
            continue
        plain = dataclasses.replace(r, augment="none")
        ior_with = metrics[(r.name, r.ipc, r.column)].get("ior")
        ior_without = metrics.get((r.name, r.ipc, plain.column), {}).get("ior")
        if ior_with is not None and ior_without is not None:
            metrics[(r.name, r.ipc, r.column)]["ars"] = augmentation_robust_score(ior_with, ior_without)
    return metrics


def robustness(results: list[RowResult]) -> dict[tuple[str, int | None, str], dict]:
    """Per (training set, INPC, architecture) with several augmentations: each one's mean
    accuracy, their mean, and the best."""
    by_row: dict[tuple, dict[str, float]] = {}
    for r in results:
        if r.augment:
            by_row.setdefault((r.name, r.ipc, r.arch), {})[r.augment] = r.mean
    return {k: {"per_augment": v, "mean": float(np.mean(list(v.values()))), "best": max(v, key=v.get)}
            for k, v in by_row.items() if len(v) > 1}


def transfer(results: list[RowResult]) -> dict[tuple[str, int | None, str], float]:
    """Per (training set, INPC, augmentation): mean accuracy over the architectures other
    than ConvNet-3 (DC-BENCH's transfer column)."""
    by_row: dict[tuple, list[float]] = {}
    for r in results:
        if r.arch != REFERENCE_ARCH:
            by_row.setdefault((r.name, r.ipc, r.augment), []).append(r.mean)
    return {k: float(np.mean(v)) for k, v in by_row.items()}


def extra_columns(cfg: BenchConfig, rows: list[BenchRow], results: list[RowResult]) -> dict:
    """Table columns beside the accuracies: DD-Ranking's IOR, HLR, LRS and ARS of the first
    architecture and augmentation (hard labels, and soft labels beside them when benched:
    two columns, never one ranking), the best accuracy over training when measured (chosen on
    the test split, so labelled as such), the augmentation mean and best, the transfer mean,
    the bytes stored."""
    first = next(r for r in results if r.arch == cfg.arch[0])
    label_columns = {r.column: r.labels for r in results if r.arch == first.arch and r.augment == first.augment}
    metrics, robust, moved = improvement_metrics(results), robustness(results), transfer(results)
    best = {(r.name, r.ipc, r.column): r for r in results if r.best}
    first_augment = cfg.augment[0] if len(cfg.augment) > 1 else ""
    extra: dict[tuple[str, int | None], dict[str, str]] = {}
    for row in rows:
        name, ipc = row.training_set.name, row.training_set.ipc
        columns = {}
        for column, labels in label_columns.items():
            for k, v in metrics.get((name, ipc, column), {}).items():
                if k != "hlr" or labels == "hard":  # HLR is a hard-label figure: once
                    columns[f"{k.upper()} ({column})"] = f"{v:+.2f}" if k in ("ior", "hlr") else f"{v:.2f}"
            if (name, ipc, column) in best:
                r = best[(name, ipc, column)]
                columns[f"best over training, test-chosen ({column})"] = f"{r.best_mean:.2f} ± {r.best_std:.2f}"
        if (name, ipc, cfg.arch[0]) in robust:
            r = robust[(name, ipc, cfg.arch[0])]
            columns |= {"augmentation mean": f"{r['mean']:.2f}", "best augmentation": r["best"]}
        if (name, ipc, first_augment) in moved:
            columns["transfer mean"] = f"{moved[(name, ipc, first_augment)]:.2f}"
        columns["bytes"] = "-" if row.artifact_bytes is None else f"{row.artifact_bytes:,}"
        extra[(name, ipc)] = columns
    return extra


def write_plots(out: Path, cfg: BenchConfig, results: list[RowResult]) -> list[str]:
    """Accuracy vs INPC (first architecture and augmentation), accuracy per augmentation
    and per architecture at the largest INPC; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    written = []
    primary = [r for r in results if r.arch == cfg.arch[0] and r.augment in ("", cfg.augment[0])]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r.name for r in primary if r.ipc is not None):
        points = sorted((r.ipc, r.mean, r.std) for r in primary if r.name == name)
        ax.errorbar([p[0] for p in points], [p[1] for p in points], [p[2] for p in points], marker="o", capsize=3, label=name)
    for r in primary:
        if r.name == FULL:
            ax.axhline(r.mean, color="grey", linestyle="--", label="whole training split")
    ax.set(xscale="log", xlabel="images per class", ylabel="test accuracy (%)", title=primary[0].column)
    ax.legend(fontsize=7)
    written.append(_save(fig, out / "accuracy_vs_inpc.png"))
    top = max(cfg.inpc)
    for attr, values, name in (("augment", cfg.augment, "augmentation"), ("arch", cfg.arch, "architecture")):
        if len(values) > 1:
            chosen = [r for r in results if r.ipc in (top, None) and (attr == "augment" or r.augment in ("", cfg.augment[0]))
                      and (attr == "arch" or r.arch == cfg.arch[0])]
            written.append(_bar_plot(plt, chosen, attr, values, out / f"per_{name}.png", f"{name}, {top} images per class"))
    return written


def _bar_plot(plt, results: list[RowResult], attr: str, values: list[str], path: Path, title: str) -> str:
    names = list(dict.fromkeys(r.name for r in results))
    width = 0.8 / len(values)
    fig, ax = plt.subplots(figsize=(max(6, len(names) * 1.2), 4))
    for i, value in enumerate(values):
        means = [next((r.mean for r in results if r.name == n and getattr(r, attr) == value), 0.0) for n in names]
        ax.bar(np.arange(len(names)) + i * width, means, width, label=value)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=20, fontsize=7)
    ax.set(ylabel="test accuracy (%)", title=title)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _save(fig, path: Path) -> str:
    from matplotlib import pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return str(path)


def write_sample_grids(out: Path, generators: dict[str, ConditionalGenerator], inpc: int = 10) -> list[str]:
    """One grid per generator as served (:func:`served_generators`): a row per class, its
    first ``inpc`` images from noise latents."""
    from torchvision.utils import save_image

    written = []
    for name, generator in generators.items():
        drawn = sample_set(generator, inpc, seed=0)
        order = torch.argsort(drawn.labels, stable=True)
        path = out / f"samples_{re.sub(r'[^A-Za-z0-9.=-]+', '_', name)}.png"
        with atomic_path(path) as tmp:
            save_image(drawn.info.denormalize(drawn.images[order]).clamp(0, 1), str(tmp), nrow=inpc, format="png")
        written.append(str(path))
    return written


def served_generators(cfg: BenchConfig, device: torch.device) -> dict[str, ConditionalGenerator]:
    """Each generator of the grid as its entries serve it (truncation and sampler settings
    applied), once per :attr:`SetSpec.served_name`, for the sample grids and fidelity."""
    served = {s.served_name: s for s in bench_specs(cfg) if s.kind == "generator"}  # loaded once per name
    return {name: load_generator(s.source, device).truncated(s.truncation).with_sampler(**s.sampling)
            for name, s in served.items()}


def generator_fidelity(cfg: BenchConfig, splits: DatasetSplits, generators: dict[str, ConditionalGenerator],
                       device: torch.device, log: Callable[[str], None]) -> dict:
    """Per generator: image fidelity (overall and per class, ``fidelity_inpc`` generated
    and real training images per class) and class fidelity, under one named extractor."""
    if not (cfg.fidelity and generators):
        return {}
    info = splits.info
    net = real_data_network(splits.train, "convnet3", cfg.fidelity_net_epochs, device, cfg.seed)
    about = f"convnet3 trained {cfg.fidelity_net_epochs} epochs on the real training split ({len(splits.train)} images)"
    extractor = FidelityExtractor.inception(cfg.inception_weights) if cfg.fidelity_extractor == "inception" \
        else FidelityExtractor(register_task_extractor(net, info, f"{info.name}-convnet3"))
    real_images, real_labels = splits.train.batch(random_subset(splits.train, cfg.fidelity_inpc, cfg.seed))
    report = {}
    for name, generator in generators.items():
        drawn = sample_set(generator, cfg.fidelity_inpc, seed=cfg.seed)
        found = per_class_fidelity(extractor, drawn.images, drawn.labels, real_images, real_labels, info, device, cfg.seed)
        found["extractor"] = about if cfg.fidelity_extractor == "task" else f"InceptionV3 ({cfg.inception_weights})"
        found["class_fidelity"] = class_fidelity(generator, net, cfg.fidelity_inpc, cfg.seed)
        found["class_fidelity_network"] = about
        overall = found["all"]
        log(f"{name}: FID {overall['fid']:.2f} (N = {overall['n_generated']} vs {overall['n_real']}), "
            f"KID {overall['kid_mean']:.4f}, IS {overall['isc_mean']:.2f}, precision {overall['precision']:.3f}, "
            f"recall {overall['recall']:.3f}, class fidelity {found['class_fidelity']:.1f} %; features: {found['extractor']}")
        report[name] = found
    return report


def architecture_ranking(cfg: BenchConfig, splits: DatasetSplits, rows: list[BenchRow], device: torch.device,
                         log: Callable[[str], None]) -> dict:
    """DC-BENCH's NAS protocol over every set but the whole split (see gencond.evaluate.ranking),
    its networks trained ``cfg.workers`` at a time."""
    if not cfg.ranking.networks:
        return {}
    fingerprint = protocol_fingerprint(splits, cfg.train)
    caches = {"full" if row.spec.source == FULL else "sets": row.cache for row in rows}
    full = next(row.training_set for row in rows if row.spec.source == FULL)
    sets = [row.training_set for row in rows if row.spec.source != FULL and row.spec.labels == "hard"]

    def accuracies(cells: list[RankingCell]) -> dict[str, float]:
        keyed = [PendingCell(caches[c.kind], json.dumps({"cell": c.key, "recipe": fingerprint}), c.train,
                             f"{c.training_set.name} ipc={c.training_set.ipc or 'all'} {c.genotype}") for c in cells]
        train_cells(keyed, cfg.workers, "ranked networks", log)
        return {c.key: p.cache.get(p.key)["accuracy"] for c, p in zip(cells, keyed)}

    log(f"architecture ranking: {cfg.ranking.networks} NAS-Bench-201 networks x {len(sets) + 1} training sets")
    report = rank_architectures(cfg.ranking, splits, sets, full, dataclasses.replace(cfg.train, augment=cfg.augment[0]),
                                device, cfg.seed, accuracies)
    for found in report["sets"]:
        log(f"  {found['training_set']} ipc={found['ipc'] or 'all'}: Spearman {found['spearman']:+.3f}, its top-1 "
            f"scores {found['top1_full_data_accuracy']:.2f} % trained on all data (best of the sample "
            f"{found['best_full_data_accuracy']:.2f} %)")
    return report


def run_bench(cfg: BenchConfig, selectors: dict[str, Selector] | None = None,
              log: Callable[[str], None] = print) -> dict:
    """Run (or resume) the grid and write ``results.json``, ``table.md``, the plots and a
    sample grid per generator to ``cfg.output_dir``; returns the report."""
    cfg.check()
    device = resolve_device(cfg.device)
    if cfg.workers > 1 and device.type != "cpu":
        raise GencondError(f"workers > 1 trains cells in forked CPU processes; on {device.type} use workers: 1")
    report = BenchmarkReport("bench", dataclasses.asdict(cfg), device)
    splits = cfg.load_splits()
    if cfg.score_on == "validation":  # every cell scored on the carved split; the test split is not read
        splits = dataclasses.replace(splits, test=splits.validation)
    cfg.ranking.check(splits)
    networks = ReferenceNetworks(cfg, splits, device)
    rows = bench_rows(cfg, splits, selectors or {}, device, networks)
    out = Path(cfg.output_dir)
    start = time.perf_counter()
    results = run_cells(cfg, splits, rows, device, log, networks)
    extra = extra_columns(cfg, rows, results)
    table = format_table(results, extra, markdown=True)
    log(f"\nfinal {cfg.score_on} accuracy (%), mean ± std over seeds (seconds of training per network); IOR and HLR in "
        "points, LRS and ARS in %\n")
    log(format_table(results, extra))
    with atomic_path(out / "table.md") as tmp:
        tmp.write_text(table + "\n", encoding="utf-8")
    generators = served_generators(cfg, device)
    files = write_plots(out, cfg, results) + write_sample_grids(out, generators)
    fidelity = generator_fidelity(cfg, splits, generators, device, log)
    ranking = architecture_ranking(cfg, splits, rows, device, log)
    metrics = improvement_metrics(results)
    report.add(dataset=splits.info.to_dict(), train_split=len(splits.train), test_split=len(splits.test),
               cells_seconds=round(time.perf_counter() - start, 1),
               results=[{**r.to_dict(), **{k: round(v, 3) for k, v in metrics.get((r.name, r.ipc, r.column), {}).items()}}
                        for r in results],
               bytes={f"{row.training_set.name} @ {row.training_set.ipc or 'all'}": row.artifact_bytes for row in rows},
               robustness=[{"training_set": k[0], "ipc": k[1], "arch": k[2], **v} for k, v in robustness(results).items()],
               transfer=[{"training_set": k[0], "ipc": k[1], "augment": k[2], "mean": round(v, 3)}
                         for k, v in transfer(results).items()],
               fidelity=fidelity, ranking=ranking, reference_networks=networks.trained(),
               files=[str(out / "table.md"), *files])
    return report.write(out / "results.json")
