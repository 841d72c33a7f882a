"""The reporting helper of the benchmark scripts: one JSON layout (benchmark name,
arguments, machine, results, wall time), the machine description and the results table.

Bad arguments raise a one-line :class:`~gencond.errors.GencondError`; each script runs its
``main`` through :func:`gencond.cli.guarded`, which ends it with that line and exit status 2."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TypeVar

import torch
import yaml

from gencond.artifacts import write_json
from gencond.config import config_from_dict, load_yaml, parse_yaml
from gencond.errors import GencondError
from gencond.evaluate.protocol import format_rows, format_table, machine_description

__all__ = ["BenchmarkReport", "add_set_argument", "config_with_sets", "format_rows", "format_table",
           "machine_description", "parse_variant", "rss_mib", "variant_config", "variant_folder",
           "variant_in_folder"]

T = TypeVar("T")


def parse_variant(item: str) -> tuple[str, dict]:
    """A ``--variant NAME={key: value, ...}`` argument -> (name, overrides); a malformed
    one raises a one-line error."""
    name, sep, text = item.partition("=")
    try:
        overrides = parse_yaml(text) if sep else None
    except yaml.YAMLError:
        overrides = None
    if not name or not isinstance(overrides, dict):
        raise GencondError(f"--variant expects NAME={{key: value, ...}}, got {item!r}")
    return name, overrides


def variant_config(cls: type[T], base: T, name: str, overrides: dict) -> T:
    """``base`` with ``overrides``, checked; a bad variant raises a one-line error."""
    return checked_config(cls, {**dataclasses.asdict(base), **overrides}, f"--variant {name}")


def variant_folder(work: str | Path, name: str) -> Path:
    """The folder of ``work`` named after a variant (spaces, ``=``, ``+``, ``@`` and ``/``
    spelt out or replaced, so the name is one folder)."""
    return Path(work) / name.replace(" ", "_").replace("=", "").replace("+", "plus").replace("@", "at").replace("/", "_")


def variant_in_folder(cls: type[T], base: T, name: str, overrides: dict, work: str | Path) -> T:
    """:func:`variant_config` writing to its :func:`variant_folder` of ``work``."""
    return variant_config(cls, base, name, {**overrides, "output_dir": str(variant_folder(work, name))})


def checked_config(cls: type[T], data: dict, where: str) -> T:
    """``cls`` built from ``data`` and checked; a bad value raises a one-line error."""
    try:
        cfg = config_from_dict(cls, data, where)
        cfg.check()
    except (GencondError, TypeError, ValueError) as err:
        first = str(err).splitlines()[0]
        raise GencondError(first if where in first else f"{where}: {first}") from None
    return cfg


def add_set_argument(parser, help: str = "override a field of the config (a YAML value)", flag: str = "--set") -> None:
    """``--set KEY=VALUE`` (repeatable; or ``flag``, for a script with several configs), read
    by :func:`config_with_sets`."""
    parser.add_argument(flag, action="append", default=[], metavar="KEY=VALUE", help=help)


def config_with_sets(cls: type[T], path: str, items: list[str]) -> T:
    """The config file at ``path`` with ``--set KEY=VALUE`` overrides (YAML values; a
    dotted KEY such as ``pool_training.batches`` sets one field of a nested config and
    keeps the file's others), checked; a malformed or bad one raises a one-line error."""
    data = load_yaml(path)
    for item in items:
        key, sep, text = item.partition("=")
        try:
            value = parse_yaml(text)
        except yaml.YAMLError:
            sep = ""
        if not key or not sep or value is None:
            raise GencondError(f"--set expects KEY=VALUE with a YAML value, got {item!r}")
        *parents, leaf = key.split(".")
        target = data
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise GencondError(f"--set {item!r}: {parent} is not a nested config")
        target[leaf] = value
    return checked_config(cls, data, f"{path} with --set")


def rss_mib(pid: int) -> float:
    """Resident memory of a process and, recursively, its children (MiB; Linux /proc)."""
    total, pids = 0.0, [pid]
    while pids:
        current = pids.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:  # the process has just ended
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0) / 1024
        pids += [int(c) for c in children]
    return total


class BenchmarkReport:
    """Collects a benchmark's sections and writes them as one JSON file."""

    def __init__(self, benchmark: str, args: dict, device: torch.device):
        self.start = time.perf_counter()
        self.data = {"benchmark": benchmark, "args": args, "machine": machine_description(device)}

    def add(self, **sections) -> None:
        self.data.update(sections)

    def write(self, path: str | Path) -> dict:
        self.data["wall_seconds"] = round(time.perf_counter() - self.start, 1)
        machine = self.data["machine"]
        print(f"\nwall time {self.data['wall_seconds']:.0f} s on {machine['device_name']} ({machine['device']}), "
              f"{machine['cpu_threads']} thread(s); CPU flags: {' '.join(machine['cpu_flags']) or 'none listed'}")
        write_json(path, self.data)
        print(f"results written to {path}")
        return self.data
