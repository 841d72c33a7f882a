"""The train-on-synthetic protocol: for every training set, architecture, label mode and
seed, train a freshly initialised network from scratch and test it on the real test
split; report the mean and standard deviation over seeds of the final test accuracy.

Label modes: ``hard`` (class indices), ``soft`` (a teacher's logits of each training
image: the set's stored ``soft_labels`` for a condensed set file, else the logits of a
teacher network trained on the real training split) and ``relabel`` (that teacher labels
every augmented view). Results of different label modes are separate columns, never one
ranking."""

from __future__ import annotations

import functools
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gencond import __version__
from gencond.artifacts import CondensedSet, check_compatible
from gencond.config import config_to_dict
from gencond.data import DataConfig, DatasetSplits, ImageSet, check_ipc, random_subset
from gencond.engine.candidates import Selector as SelectionNetwork
from gencond.engine.d3hr import D3HR
from gencond.engine.networks import (
    Evaluated,
    IndexedData,
    TeacherLabelled,
    TrainConfig,
    TrainingData,
    real_data_network,
    resolve_device,
    test_accuracy,
    train_and_test,
)
from gencond.engine.sampling import check_inpc, generate_in_batches, sample_set
from gencond.errors import GencondError
from gencond.models import (
    ConditionalGenerator,
    check_architecture,
    create_network,
    load_generator,
)
from gencond.runtime import cpu_description

FULL, RANDOM = "full", "random"
LABEL_MODES = ("hard", "soft", "relabel")

# A selection rule: (images, ipc, seed) -> dataset indices, ipc per class.
Selector = Callable[[ImageSet, int, int], torch.Tensor]


@dataclass
class EvalConfig(DataConfig):
    """A whole evaluation job: which training sets, which networks, how many seeds
    (``seed`` .. ``seed + seeds - 1``)."""

    select: str = field(default="random", metadata={"help": "selection method for real subsets, or 'full'"})
    condensed: list[str] = field(default_factory=list, metadata={"help": "condensed set file(s) to evaluate instead"})
    checkpoint: str = field(default="", metadata={"help": "generator folder to evaluate instead"})
    inpc: list[int] = field(default_factory=lambda: [1, 10, 50], metadata={"help": "images per class drawn from --checkpoint"})
    truncation: float = field(default=0.0, metadata={"help": "draw --checkpoint's latents truncated at this psi "
                                                                "(0 = off; the truncation trick)"})
    protocol: list[str] = field(default_factory=lambda: ["fixed", "fresh"],
                                metadata={"help": "generator protocols: fixed (one set drawn per seed), fresh "
                                                  "(new samples every step, same count per epoch) and/or pool "
                                                  "(every epoch INPC per class from pool_factor x INPC drawn once)"})
    pool_factor: int = field(default=10, metadata={"help": "the pool protocol's pool, in multiples of INPC"})
    ipc: list[int] = field(default_factory=lambda: [1, 10, 50], metadata={"help": "images per class for selection"})
    arch: list[str] = field(default_factory=lambda: ["convnet3"], metadata={"help": "evaluation architecture(s)"})
    labels: list[str] = field(default_factory=lambda: ["hard"],
                              metadata={"help": "label modes: hard, soft (a teacher's logits per image), relabel "
                                                "(the teacher labels every augmented view); one column each"})
    teacher_arch: str = field(default="convnet3", metadata={"help": "the teacher of soft and relabel modes"})
    teacher_epochs: int = field(default=10, metadata={"help": "epochs the teacher trains on the real training split"})
    seeds: int = field(default=3, metadata={"help": "number of seeds (from seed on): new network, order and subset each"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    json: str = field(default="", metadata={"help": "where to write the results (default results/eval-<dataset>.json)"})
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class TrainingSet:
    """One row of the results table: a named way to get training data for a seed."""

    name: str
    ipc: int | None
    make: Callable[[int], TrainingData]
    soft: Callable[[int], TrainingData] | None = field(default=None, repr=False)
    """The set's own soft labels (a condensed file's); None: the evaluator's teacher labels
    ``make``'s images."""


@dataclass
class RowResult:
    name: str
    ipc: int | None
    arch: str
    accuracies: list[float]
    train_seconds: list[float]
    labels: str = "hard"
    augment: str = ""
    """The evaluation augmentation when a benchmark varies it ('' = the config's one)."""
    best: list[float] | None = None
    """Per seed, the best test accuracy over training (``best_every``), where measured."""

    @property
    def column(self) -> str:
        """The results-table column: the architecture, the augmentation when a benchmark
        varies it, and the label mode unless hard."""
        parts = [self.arch] + ([self.augment] if self.augment else []) \
            + ([f"{self.labels} labels"] if self.labels != "hard" else [])
        return ", ".join(parts)

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        """Population standard deviation over seeds, as the DC/DSA/DM code reports."""
        return float(np.std(self.accuracies))

    @property
    def best_mean(self) -> float:
        """The best accuracy over training (``best``), mean over seeds."""
        return float(np.mean(self.best))

    @property
    def best_std(self) -> float:
        return float(np.std(self.best))

    def to_dict(self) -> dict:
        return {
            "training_set": self.name,
            "ipc": self.ipc,
            "arch": self.arch,
            "labels": self.labels,
            **({"augment": self.augment} if self.augment else {}),
            "mean": round(self.mean, 3),
            "std": round(self.std, 3),
            "accuracies": [round(a, 3) for a in self.accuracies],
            "train_seconds": [round(s, 2) for s in self.train_seconds],
            **({"best_accuracies": [round(a, 3) for a in self.best], "best_mean": round(self.best_mean, 3),
                "best_std": round(self.best_std, 3)} if self.best else {}),
        }


def selection_sets(splits: DatasetSplits, method: str, ipcs: list[int], select: Selector | None = None) -> list[TrainingSet]:
    """Real subsets chosen by ``select`` (the seed picks the subset), by random selection
    when ``method`` is 'random' and no rule is given, or the whole training split when
    ``method`` is 'full'. Other rules (herding, k-center, ...) are methods: the caller
    passes them (``gencond eval`` looks ``method`` up in the method registry)."""
    train = splits.train
    if method == FULL:
        return [TrainingSet(FULL, None, lambda seed: IndexedData.from_image_set(train))]
    if select is None:
        if method != RANDOM:
            raise GencondError(f"selection {method!r} needs its rule: pass select= (gencond eval looks it up)")
        select = random_subset
    for ipc in ipcs:  # fail on impossible sizes before any training starts
        check_ipc(train, ipc)

    def make(ipc: int):
        return lambda seed: IndexedData.from_tensors(*train.batch(select(train, ipc, seed)))

    return [TrainingSet(method, ipc, make(ipc)) for ipc in ipcs]


def condensed_sets(splits: DatasetSplits, paths: list[str], require_soft: bool = False) -> list[TrainingSet]:
    """Condensed set files, each with its stored soft labels where it has them (where it has
    none, a teacher may label its images); with ``require_soft``, a file without them is
    refused now."""
    rows = []
    for path in paths:
        condensed = CondensedSet.load(path)
        condensed.check_matches(splits.info, path)
        counts = condensed.images_per_class()
        ipc = int(counts.max()) if int(counts.min()) == int(counts.max()) else None
        data = IndexedData.from_condensed(condensed)
        stored = condensed.soft_labels is not None or require_soft  # the latter refused by from_condensed
        soft_data = IndexedData.from_condensed(condensed, soft=True) if stored else None
        rows.append(TrainingSet(f"{condensed.method} ({Path(path).name})", ipc, lambda seed, d=data: d,
                                None if soft_data is None else lambda seed, d=soft_data: d))
    return rows


PROTOCOLS = ("fixed", "fresh", "pool")


class FreshSamples:
    """DiM's deployment protocol as evaluation training data: each epoch has
    ``ceil(C * inpc / batch)`` steps, and each step draws new noise for a batch of
    labels; over an epoch every class appears ``inpc`` times (shuffled)."""

    def __init__(self, generator: ConditionalGenerator, inpc: int, generate_batch: int = 500):
        check_inpc(inpc)
        self.generator, self.inpc, self.generate_batch = generator, inpc, generate_batch
        self.labels = torch.arange(generator.info.num_classes).repeat_interleave(inpc)

    def epoch(self, batch_size: int, generator: torch.Generator):
        order = self.labels[torch.randperm(len(self.labels), generator=generator)]
        for labels in order.split(batch_size):
            latents = self.generator.latents(None, len(labels), generator)
            yield generate_in_batches(self.generator, labels, latents, self.generate_batch, to_cpu=False), labels


class PoolSamples:
    """The pool protocol, for generators whose fresh sampling is too slow to evaluate (a
    diffusion model pays sampler steps x 2 UNet passes per image): the seed's set of
    ``inpc x factor`` images per class is drawn once, and every epoch trains on ``inpc`` of
    them per class, drawn anew (shuffled). The images per epoch are those of the fixed set;
    their variety is the pool's."""

    def __init__(self, generator: ConditionalGenerator, inpc: int, factor: int, seed: int):
        check_inpc(inpc)
        drawn = sample_set(generator, inpc * factor, seed)
        self.images, self.labels = drawn.images, drawn.labels
        self.inpc, self.pool, self.num_classes = inpc, inpc * factor, generator.info.num_classes

    def epoch(self, batch_size: int, generator: torch.Generator):
        chosen = torch.rand(self.num_classes, self.pool, generator=generator).argsort(1)[:, :self.inpc]
        index = (chosen + self.pool * torch.arange(self.num_classes).unsqueeze(1)).flatten()
        for part in index[torch.randperm(len(index), generator=generator)].split(batch_size):
            yield self.images[part], self.labels[part]


def generator_sets(splits: DatasetSplits, checkpoint: str, inpcs: list[int], protocols: list[str],
                   device: torch.device, truncation: float = 0.0, candidates: int = 1, rule: str = "herding",
                   selector: Callable[[], SelectionNetwork] | None = None,
                   sampling: dict | None = None, pool_factor: int = 10,
                   d3hr: Callable[[ConditionalGenerator], D3HR] | None = None) -> list[TrainingSet]:
    """A generator under each protocol asked for. ``fixed``: the seed draws one set of INPC x C
    images, a true condensed set comparable with pixel methods at equal IPC. ``fresh``:
    DiM's deployment, the same number of images per epoch but new ones every step. With
    ``truncation`` psi > 0 both draw latents truncated at psi. With ``candidates`` M > 1
    the fixed set is kept by ``rule`` from M x INPC draws in the embedding of ``selector()``
    (called when a set is made), and there is no fresh row: selection serves fixed sets.
    ``sampling``: a diffusion generator's ``with_sampler`` settings. ``pool``: every epoch
    draws INPC images per class from a pool of ``pool_factor`` x INPC drawn once per seed
    (:class:`PoolSamples`). ``d3hr(generator)``: the D3HR choice of the fixed sets' latents
    (made once, when a set is first made; fixed sets only, as with candidates)."""
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise GencondError(f"unknown protocol {unknown[0]!r}; choose from {', '.join(PROTOCOLS)}")
    if any(n <= 0 for n in inpcs):
        raise GencondError(f"images per class (INPC) must be positive, got {inpcs}")
    generator = load_generator(checkpoint, device).truncated(truncation).with_sampler(**(sampling or {}))
    check_compatible(generator.info, splits.info, checkpoint)
    served = (f", truncation {truncation:g}" if truncation else "") + (f", {rule} of {candidates}x" if candidates > 1 else "")
    chosen = functools.cache(lambda: d3hr(generator)) if d3hr else lambda: None
    served += ", D3HR latents" if d3hr else ""
    rows = []
    for protocol in protocols if candidates == 1 and d3hr is None else ["fixed"]:
        for inpc in inpcs:
            label = protocol
            if protocol == "fixed":
                make = lambda seed, n=inpc: IndexedData.from_condensed(sample_set(
                    generator, n, seed, candidates=candidates, rule=rule, selector=selector() if selector else None,
                    d3hr=chosen()))
            elif protocol == "pool":
                make, label = lambda seed, n=inpc: PoolSamples(generator, n, pool_factor, seed), f"pool x{pool_factor}"
            else:
                make = lambda seed, n=inpc: FreshSamples(generator, n)
            rows.append(TrainingSet(f"generator ({label}{served})", inpc, make))
    return rows


def check_label_modes(labels: list[str]) -> None:
    unknown = [m for m in labels if m not in LABEL_MODES]
    if unknown or not labels:
        raise GencondError(f"unknown label mode {unknown[0] if unknown else '(none)'!r}; "
                           f"choose from {', '.join(LABEL_MODES)}")


def labelled_data(training_set: TrainingSet, mode: str, seed: int, teacher: torch.nn.Module | None) -> TrainingData:
    """The set's training data for one seed with the targets of label mode ``mode``."""
    if mode == "soft":
        return training_set.soft(seed) if training_set.soft else TeacherLabelled(training_set.make(seed), teacher)
    return training_set.make(seed)


def evaluate_cell(splits: DatasetSplits, training_set: TrainingSet, arch: str, mode: str, seed: int,
                  cfg: TrainConfig, device: torch.device, teacher: torch.nn.Module | None = None,
                  best_every: int = 0) -> Evaluated:
    """One network: ``arch`` trained from scratch on ``training_set``'s data for ``seed``
    with the targets of label ``mode`` (``best_every``: see :func:`train_and_test`)."""
    info = splits.info
    return train_and_test(
        lambda: create_network(arch, info.num_classes, info.channels, info.image_size),
        labelled_data(training_set, mode, seed, teacher), splits.test, cfg, device, seed,
        teacher if mode == "relabel" else None, best_every,
    )


def run_protocol(splits: DatasetSplits, sets: list[TrainingSet], archs: list[str], seeds: int,
                 cfg: TrainConfig, device: torch.device, log: Callable[[str], None] = print,
                 first_seed: int = 0, labels: list[str] = ("hard",),
                 teacher: torch.nn.Module | None = None) -> list[RowResult]:
    """Every training set x architecture x label mode x seed (``seeds`` of them from
    ``first_seed`` on); ``teacher`` serves the soft and relabel modes."""
    info = splits.info
    check_label_modes(list(labels))
    if teacher is None and any(m != "hard" for m in labels):
        raise GencondError("soft and relabel label modes need a teacher network")
    for arch in archs:  # unknown names fail before any training
        create_network(arch, info.num_classes, info.channels, info.image_size)
    results = []
    for training_set in sets:
        for arch in archs:
            for mode in labels:
                row = RowResult(training_set.name, training_set.ipc, arch, [], [], mode)
                for seed in range(first_seed, first_seed + seeds):
                    acc, seconds, _ = evaluate_cell(splits, training_set, arch, mode, seed, cfg, device, teacher)
                    row.accuracies.append(acc)
                    row.train_seconds.append(seconds)
                    log(f"  {training_set.name} ipc={training_set.ipc or 'all'} {row.column} seed={seed}: "
                        f"{acc:.2f}% ({seconds:.1f} s)")
                results.append(row)
    return results


def evaluation_teacher(splits: DatasetSplits, cfg: EvalConfig, device: torch.device,
                       log: Callable[[str], None] = print) -> tuple[torch.nn.Module | None, dict]:
    """The teacher of the soft and relabel modes, trained on the real training split, and
    its description (None, {} when every mode is hard)."""
    if all(m == "hard" for m in cfg.labels):
        return None, {}
    start = time.perf_counter()
    teacher = real_data_network(splits.train, cfg.teacher_arch, cfg.teacher_epochs, device, cfg.seed)
    about = {"network": cfg.teacher_arch, "epochs": cfg.teacher_epochs, "trained_on": "the real training split",
             "images": len(splits.train), "seed": cfg.seed, "train_seconds": round(time.perf_counter() - start, 2)}
    log(f"teacher: {cfg.teacher_arch} trained {cfg.teacher_epochs} epoch(s) on {len(splits.train)} real training "
        f"images in {about['train_seconds']:.1f} s")
    return teacher, about


def format_table(results: list[RowResult], extra: dict[tuple[str, int | None], dict[str, str]] | None = None,
                 markdown: bool = False) -> str:
    """Rows: training set x images per class (IPC or INPC); columns: architecture, 'mean ± std (s per network)', then
    the ``extra`` columns given per (training set, IPC) (e.g. training cost), '-' where
    absent; aligned plain text, or a markdown table."""
    extra = extra or {}
    archs = list(dict.fromkeys(r.column for r in results))
    extra_names = list(dict.fromkeys(column for columns in extra.values() for column in columns))
    keys = list(dict.fromkeys((r.name, r.ipc) for r in results))
    cell = {(r.name, r.ipc, r.column): f"{r.mean:6.2f} ± {r.std:4.2f} ({np.mean(r.train_seconds):.0f} s)" for r in results}
    header = ["training set", "images/class"] + archs + extra_names
    lines = [[name, str(ipc or "all")] + [cell.get((name, ipc, a), "-") for a in archs]
             + [extra.get((name, ipc), {}).get(column, "-") for column in extra_names] for name, ipc in keys]
    return format_rows(header, lines, markdown)


def format_rows(header: list[str], lines: list[list[str]], markdown: bool = False) -> str:
    """A table of strings: aligned plain text, or markdown."""
    if markdown:
        return "\n".join("| " + " | ".join(row) + " |" for row in [header, ["---"] * len(header)] + lines)
    widths = [max(len(row[i]) for row in [header] + lines) for i in range(len(header))]
    fmt = lambda row: " | ".join(v.ljust(w) for v, w in zip(row, widths))  # noqa: E731
    rule = "-+-".join("-" * w for w in widths)
    return "\n".join([fmt(header), rule] + [fmt(row) for row in lines])


def machine_description(device: torch.device) -> dict:
    cpu = cpu_description()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu["cpu_model"]
    return {
        "device": str(device),
        "device_name": name,
        "cpu_threads": torch.get_num_threads(),
        **cpu,
        "torch": torch.__version__,
        "gencond": __version__,
        "python": platform.python_version(),
    }


def run_eval(cfg: EvalConfig, log: Callable[[str], None] = print, select: Selector | None = None) -> dict:
    """Load the data, run the protocol, print the table; returns the JSON report.
    ``select`` is the selection rule named by ``cfg.select`` (random needs none)."""
    if cfg.seeds <= 0:
        raise GencondError(f"the number of seeds must be positive, got {cfg.seeds}")
    if any(ipc <= 0 for ipc in cfg.ipc):
        raise GencondError(f"images per class must be positive, got {cfg.ipc}")
    cfg.train.check()
    check_label_modes(cfg.labels)
    check_architecture(cfg.teacher_arch)
    if cfg.teacher_epochs < 0 or cfg.pool_factor < 1:
        raise GencondError(f"teacher epochs must be >= 0 and the pool factor >= 1, got {cfg.teacher_epochs} and "
                           f"{cfg.pool_factor}")
    device = resolve_device(cfg.device)
    start = time.perf_counter()
    splits = cfg.load_splits()
    if cfg.checkpoint:
        sets = generator_sets(splits, cfg.checkpoint, cfg.inpc, cfg.protocol, device, cfg.truncation,
                              pool_factor=cfg.pool_factor)
    elif cfg.condensed:
        sets = condensed_sets(splits, cfg.condensed, require_soft="soft" in cfg.labels)
    else:
        sets = selection_sets(splits, cfg.select, cfg.ipc, select)
    log(f"evaluating on {splits.info.name}: {len(splits.train)} train / {len(splits.test)} test images, "
        f"{cfg.train.epochs} epochs, augment={cfg.train.augment}, device={device}")
    teacher, about_teacher = evaluation_teacher(splits, cfg, device, log)
    results = run_protocol(splits, sets, cfg.arch, cfg.seeds, cfg.train, device, log, cfg.seed, cfg.labels, teacher)
    if teacher is not None:  # after the final evaluation: the test split only reports
        about_teacher["test_accuracy"] = round(test_accuracy(teacher, splits.test, device), 3)
        log(f"teacher's own test accuracy: {about_teacher['test_accuracy']:.2f} %")
    wall = time.perf_counter() - start
    log("\nfinal test accuracy (%), mean ± std over "
        f"{cfg.seeds} seed(s); seconds of training per network in brackets\n")
    log(format_table(results))
    log(f"\nwall time {wall:.0f} s")
    return {
        "dataset": splits.info.to_dict(),
        "config": config_to_dict(cfg),
        "machine": machine_description(device),
        "wall_seconds": round(wall, 1),
        "results": [r.to_dict() for r in results],
        **({"teacher": about_teacher} if about_teacher else {}),
    }
