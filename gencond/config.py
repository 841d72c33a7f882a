"""Typed configuration: dataclasses hold every default; YAML files and command-line
flags override them, in that order.

A dataclass is the single place where a job's defaults live. ``add_config_arguments``
turns its fields (nested dataclasses flattened) into ``--flag`` options that default to
"not given", and ``build_config`` layers defaults <- YAML <- flags. A dataclass that renamed
a field lists the old names in ``renamed_keys`` (old -> new): the old key in a YAML file, and
its old flag, end with one line naming the new one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from gencond.errors import GencondError

T = TypeVar("T")


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_list(tp) -> bool:
    return typing.get_origin(tp) in (list, tuple)


def _unwrap_optional(tp):
    """``X | None`` -> X."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _coerce(value: Any, tp, where: str) -> Any:
    tp = _unwrap_optional(tp)
    if value is None:
        return None
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise GencondError(f"{where}: expected a mapping, got {value!r}")
        return config_from_dict(tp, value, where)
    if _is_list(tp):
        (item,) = typing.get_args(tp)[:1] or (Any,)
        values = value if isinstance(value, (list, tuple)) else [value]
        return [_coerce(v, item, where) for v in values]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "yes", "1", "on"):
            return True
        if str(value).lower() in ("false", "no", "0", "off"):
            return False
        raise GencondError(f"{where}: expected true or false, got {value!r}")
    if tp in (int, float, str):
        try:
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return tp(value)
        except (TypeError, ValueError):
            raise GencondError(f"{where}: expected {tp.__name__}, got {value!r}") from None
    return value


def config_from_dict(cls: type[T], values: dict, where: str = "config") -> T:
    """Build a dataclass from a (possibly nested) mapping, rejecting unknown keys (a renamed
    one with the name it has now)."""
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    renamed = getattr(cls, "renamed_keys", {})
    old = next((key for key in unknown if key in renamed), None)
    if old is not None:
        raise GencondError(f"{where}: {old} was renamed {renamed[old]} (see --help for its values)")
    if unknown:
        raise GencondError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys are {', '.join(sorted(names))}")
    base = cls()
    kwargs = {}
    for name, value in values.items():
        current = getattr(base, name)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            value = {**dataclasses.asdict(current), **value}
        kwargs[name] = _coerce(value, hints[name], f"{where}.{name}")
    return dataclasses.replace(base, **kwargs)


class _TrueFalseLoader(yaml.SafeLoader):
    """PyYAML's safe loader (YAML 1.1) with YAML 1.2's booleans only: true and false. YAML 1.1
    also reads yes/no/on/off as booleans, which turned ``mixed_precision: no`` (Accelerate's
    word for fp32) into False. Numbers keep YAML 1.1's rules."""


_TrueFalseLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_TrueFalseLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                        list("tTfF"))


def parse_yaml(text: str) -> Any:
    """``text`` as YAML, safely, where only true/false are booleans (``no`` stays a string)."""
    return yaml.load(text, Loader=_TrueFalseLoader)


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise GencondError(f"no config file at {path}")
    try:
        data = parse_yaml(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise GencondError(f"cannot parse {path}: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise GencondError(f"{path}: a config file must be a mapping of keys to values")
    return data


def _leaf_fields(cls, prefix: tuple[str, ...] = ()):
    """(path, field, type) for every non-dataclass field, nested ones flattened."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _leaf_fields(tp, prefix + (f.name,))
        else:
            yield prefix + (f.name,), f, tp


def _flags(path: tuple[str, ...], unique: bool) -> list[str]:
    """``--name`` for a top-level field; ``--parent.name`` for a nested one, plus
    ``--name`` when no other field of the config has that name."""
    dotted = "--" + ".".join(part.replace("_", "-") for part in path)
    short = "--" + path[-1].replace("_", "-")
    return [dotted] + ([short] if len(path) > 1 and unique else [])


class _RenamedFlag(argparse.Action):
    """An old flag: one line naming the flag that replaced it."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs):
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} was renamed {self.new}")


def _renamed_flags(cls, prefix: tuple[str, ...], counts: dict[str, int]):
    """(old flags, new flag) for every ``renamed_keys`` entry of ``cls`` and its nested configs."""
    hints = _hints(cls)
    for old, new in getattr(cls, "renamed_keys", {}).items():
        new_flags = _flags(prefix + (new,), counts.get(new, 0) == 1)
        yield _flags(prefix + (old,), old not in counts), new_flags[-1]
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _renamed_flags(hints[f.name], prefix + (f.name,), counts)


def _leaf_flags(cls) -> tuple[list[tuple[tuple[str, ...], dataclasses.Field, Any, Any, list[str]]], dict[str, int]]:
    """(path, field, type, default, flags) of every leaf field of ``cls``, and how many leaves
    bear each name (a nested field gets its short flag only where its name is unique)."""
    defaults, leaves = cls(), list(_leaf_fields(cls))
    counts: dict[str, int] = {}
    for path, _, _ in leaves:
        counts[path[-1]] = counts.get(path[-1], 0) + 1
    rows = []
    for path, f, tp in leaves:
        default = defaults
        for part in path:
            default = getattr(default, part)
        rows.append((path, f, _unwrap_optional(tp), default, _flags(path, counts[path[-1]] == 1)))
    return rows, counts


def add_config_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One ``--flag`` per leaf field of ``cls`` (see :func:`_flags` for nested fields), and
    one refusing each renamed field's old flag."""
    rows, counts = _leaf_flags(cls)
    for old_flags, new_flag in _renamed_flags(cls, (), counts):
        parser.add_argument(*old_flags, *[f"--no-{flag[2:]}" for flag in old_flags], action=_RenamedFlag,
                            new=new_flag, dest=argparse.SUPPRESS)
    for path, f, tp, default, flags in rows:
        help_text = f"{f.metadata.get('help', '')} (default: {default})".strip()
        common = {"dest": ".".join(path), "default": argparse.SUPPRESS, "help": help_text}
        if tp is bool:
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction, **common)
        elif _is_list(tp):  # repeated flags add up: --variant A --variant B, or --inpc 1 10
            parser.add_argument(*flags, nargs="+", action="extend", metavar=path[-1].upper(), **common)
        else:
            parser.add_argument(*flags, metavar=path[-1].upper(), **common)


def field_reference(cls) -> list[dict]:
    """Every leaf field of ``cls`` as the configuration reference lists it: the YAML key
    (dotted for nested fields), its flags, type, default and help text."""
    return [{"key": ".".join(path), "flags": flags, "default": default, "help": f.metadata.get("help", ""),
             "type": f"list of {typing.get_args(tp)[0].__name__}" if _is_list(tp) else getattr(tp, "__name__", str(tp))}
            for path, f, tp, default, flags in _leaf_flags(cls)[0]]


def _nest(flat: dict[str, Any]) -> dict:
    nested: dict = {}
    for dotted, value in flat.items():
        node = nested
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return nested


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


class OneLineParser(argparse.ArgumentParser):
    """argparse's own errors (a missing or malformed flag) as one line, exit status 2, like
    every other bad input; ``--help`` still shows the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def config_parser(cls, prog: str, description: str) -> argparse.ArgumentParser:
    """A parser of ``--config FILE`` plus one flag per field of ``cls``."""
    parser = OneLineParser(prog=prog, description=description)
    parser.add_argument("--config", help="YAML file of config fields (flags override it)")
    add_config_arguments(parser, cls)
    return parser


def build_config(cls: type[T], args: argparse.Namespace, config_path: str | Path | None = None) -> T:
    """Defaults, then the YAML file (if any), then the flags that were given."""
    values = load_yaml(config_path) if config_path else {}
    leaf_names = {".".join(path) for path, _, _ in _leaf_fields(cls)}
    given = {k: v for k, v in vars(args).items() if k in leaf_names}
    return config_from_dict(cls, _merge(values, _nest(given)), str(config_path or "flags"))


def config_to_dict(config) -> dict:
    return dataclasses.asdict(config)


def check_reused(stored: dict, config, artifact: str, ignore: tuple[str, ...] = (), **expected) -> None:
    """One line naming what differs when ``artifact``, made from ``stored`` (a config as
    written to JSON, where tuples are lists), was not made from the dataclass ``config`` and
    the ``expected`` keys (the method that made it, say): a benchmark that reuses earlier runs
    must not score it as this config's. Fields in ``ignore`` (where it ran or was written) do
    not count; a field ``stored`` lacks (an older version's) does."""
    if not isinstance(stored, dict):
        raise GencondError(f"{artifact} has no config record to compare: remove it or leave out reuse")
    wanted = {**json.loads(json.dumps(dataclasses.asdict(config))), **expected}
    differ = [key for key, value in sorted(wanted.items())
              if key not in ignore and (key not in stored or stored[key] != value)]
    if differ:
        named = ", ".join(f"{key} {stored[key]}" if key in expected and key in stored else key for key in differ)
        raise GencondError(f"{artifact} was made with another {named}: remove it or leave out reuse")


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


def config_with_sets(cls: type[T], path: str, items: list[str]) -> T:
    """The config file at ``path`` with ``KEY=VALUE`` overrides (``gencond sweep --set``) (YAML values; a
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
