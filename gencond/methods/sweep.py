"""``gencond sweep``: choose a method's settings on held-out data, never on the test split.

Variants of one config of a generator method (the codebook generator, DiM) or a pixel
method (DM, DC, DSA, IDC) are trained with a validation split carved from the training
data (``validation_per_class`` images per class, shared by every variant), and their fixed
sets are scored on that split, beside random and herded real images of the same carved
split. A generator's fixed INPC sets (the codebook's first codes; DiM's draws of each
seed), or a pixel method's set condensed at each INPC as its IPC, each train a ConvNet-3
from scratch (the evaluation recipe, ``eval_epochs``, DSA, ``seeds`` seeds) that is tested
on the validation images. The test split is not read: a choice made from this table is
then trained on the whole training split and measured on the test split by ``gencond bench``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gencond.config import (
    config_with_sets,
    parse_variant,
    variant_config,
    variant_folder,
    variant_in_folder,
)
from gencond.engine import IndexedData, TrainConfig, resolve_device, sample_set
from gencond.errors import GencondError
from gencond.evaluate.protocol import (
    TrainingSet,
    format_table,
    run_protocol,
    selection_sets,
)
from gencond.evaluate.report import BenchmarkReport
from gencond.methods._registry import Method, get_method
from gencond.methods.base import condense_or_reuse
from gencond.methods.coresets import SelectionConfig, herding
from gencond.models import load_generator
from gencond.training.trainer import reusable_generator

TRAINED_KINDS = ("generator", "pixel")


@dataclass
class SweepConfig:
    """What ``gencond sweep METHOD`` trains and how it scores the variants."""

    config: str = field(default="", metadata={"help": "the method's config file (default: configs/METHOD/digits.yaml)"})
    set: list[str] = field(default_factory=list, metadata={"help": "KEY=VALUE overrides of that config for every "
                                                                   "variant (YAML values; a dotted KEY sets a nested "
                                                                   "field)"})
    variant: list[str] = field(default_factory=list, metadata={"help": "NAME={key: value, ...}: a variant to train "
                                                                       "({} = the config as it is)"})
    work_dir: str = field(default="runs/sweep", metadata={"help": "one folder per variant, and results.json"})
    validation_per_class: int = field(default=20, metadata={"help": "training images per class held out to score on"})
    inpc: list[int] = field(default_factory=lambda: [1, 10], metadata={
        "help": "images per class of the fixed sets (a pixel method condenses one set at each)"})
    seeds: int = field(default=2, metadata={"help": "evaluation seeds per set"})
    eval_epochs: int = field(default=300, metadata={"help": "epochs each ConvNet-3 trains"})
    herding_epochs: int = field(default=5, metadata={"help": "epochs of herding's embedding network (real rows)"})
    reuse: bool = field(default=False, metadata={"help": "score variants whose generator or sets are already in "
                                                          "work_dir, made from the same config, without training again"})
    real: bool = field(default=True, metadata={"help": "also score random and herded real images"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    json: str = field(default="", metadata={"help": "where to write the results (default WORK_DIR/results.json)"})

    def check(self) -> None:
        if not self.variant:
            raise GencondError("give at least one --variant NAME={key: value, ...} ({} = the config as it is)")
        if min(self.validation_per_class, self.seeds, self.eval_epochs, *self.inpc) <= 0:
            raise GencondError("validation_per_class, seeds, eval_epochs and inpc must be positive")


def run_sweep(method_name: str, cfg: SweepConfig, log=print) -> dict:
    """Train (or reuse) every variant, score the fixed sets on the validation split, print
    the table and write the JSON report; returns it."""
    cfg.check()
    method = get_method(method_name)
    if method.kind not in TRAINED_KINDS:
        raise GencondError(f"gencond sweep trains generator or pixel methods; {method_name} is a {method.kind} method")
    device = resolve_device(cfg.device)
    report = BenchmarkReport(f"{method_name}_sweep", dataclasses.asdict(cfg), device)
    base = config_with_sets(method.config, cfg.config or f"configs/{method_name}/digits.yaml", cfg.set)
    base = dataclasses.replace(base, validation_per_class=cfg.validation_per_class)
    variants = [parse_variant(item) for item in cfg.variant]
    for name, overrides in variants:
        if {"seed", "validation_per_class"} & set(overrides):
            raise GencondError(f"--variant {name}: seed and validation_per_class choose the carved split, which every "
                               "variant shares; set them for all with --set")
    trained = generator_variants if method.kind == "generator" else pixel_variants
    configs, variant_rows, train_seconds = trained(method, base, variants, cfg, device)

    splits = base.load_splits()  # the carved split: training images, validation images
    held_out = dataclasses.replace(splits, test=splits.validation)  # scored on the validation split only
    real = selection_sets(held_out, "random", cfg.inpc) + selection_sets(
        held_out, "herding", cfg.inpc, lambda images, ipc, seed: herding(
            images, ipc, 0, SelectionConfig(embed_epochs=cfg.herding_epochs, device=cfg.device))) if cfg.real else []
    results = run_protocol(held_out, real + variant_rows, ["convnet3"], cfg.seeds, TrainConfig(epochs=cfg.eval_epochs),
                           device, log)
    log(f"\n{splits.info.name}: {len(splits.train)} training / {len(splits.validation)} validation images (the "
        f"test split is not read); fixed sets, ConvNet-3, {cfg.eval_epochs} epochs, DSA, {cfg.seeds} seeds, "
        "final validation accuracy\n")
    log(format_table(results))
    report.add(dataset=splits.info.to_dict(), validation_images=len(splits.validation), train_seconds=train_seconds,
               configs=configs, results=[r.to_dict() for r in results], torch_threads=torch.get_num_threads())
    return report.write(cfg.json or Path(cfg.work_dir) / "results.json")


def generator_variants(method: Method, base, variants: list[tuple[str, dict]], cfg: SweepConfig,
                       device: torch.device) -> tuple[dict, list[TrainingSet], dict]:
    """Train each generator variant (or reuse it); returns (the configs as run, as dicts,
    fixed-set rows, training seconds)."""
    base = dataclasses.replace(base, sample_every=0)
    configs = {name: variant_in_folder(method.config, base, name, overrides, cfg.work_dir)
               for name, overrides in variants}
    train_seconds, rows = {}, []
    for name, run in configs.items():
        if cfg.reuse and reusable_generator(method.name, run):
            train_seconds[name] = None  # trained by an earlier run: its seconds are in that run's JSON and log
        else:
            start = time.perf_counter()
            method.fn(run)
            train_seconds[name] = round(time.perf_counter() - start, 1)
        generator = load_generator(Path(run.output_dir) / "generator", device)
        rows += [TrainingSet(name, inpc, lambda seed, g=generator, n=inpc: IndexedData.from_condensed(sample_set(g, n, seed)))
                 for inpc in cfg.inpc]
    return {name: dataclasses.asdict(run) for name, run in configs.items()}, rows, train_seconds


def pixel_variants(method: Method, base, variants: list[tuple[str, dict]], cfg: SweepConfig,
                   device: torch.device) -> tuple[dict, list[TrainingSet], dict]:
    """Condense each pixel variant at every INPC on ``cfg.device`` (or reuse its sets);
    returns (the configs as run per variant and INPC, as dicts, set rows, condensation
    seconds per variant and INPC). One set per INPC: the seeds vary the evaluation."""
    configs, seconds, rows = {}, {}, []
    for name, overrides in variants:
        if {"ipc", "output"} & set(overrides):
            raise GencondError(f"--variant {name}: a pixel variant's ipc and output come from --inpc and --work-dir")
        variant = variant_config(method.config, base, name, overrides)
        configs[name], seconds[name] = {}, {}
        for inpc in cfg.inpc:
            path = variant_folder(cfg.work_dir, name) / f"ipc{inpc}.safetensors"
            run = dataclasses.replace(variant, ipc=inpc, output=str(path), device=cfg.device)
            configs[name][inpc] = dataclasses.asdict(run)
            condensed = condense_or_reuse(method.name, run, cfg.reuse)
            seconds[name][inpc] = condensed.config["condense_seconds"]
            rows.append(TrainingSet(name, inpc, lambda seed, c=condensed: IndexedData.from_condensed(c)))
    return configs, rows, seconds
