"""The ``gencond`` command line. Each subcommand registers itself with :func:`command`.

Bad input raises :class:`~gencond.errors.GencondError`, which ends here as one line on
stderr and exit status 2; a failing machine (a full disk, a read-only folder: ``OSError``)
ends as one line and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

from gencond import __version__
from gencond.config import OneLineParser
from gencond.errors import GencondError
from gencond.runtime import keep_freed_memory


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


_COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]):
    """Register the decorated function as ``gencond NAME``."""

    def decorator(run):
        _COMMANDS[name] = Command(name, help, add_arguments, run)
        return run

    return decorator


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="gencond",
        description="Generative-model dataset condensation: condense, sample and evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"gencond {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in _COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def guarded(run: Callable[[], int | None], prog: str) -> int:
    """Run ``run``; bad input becomes one line on stderr and exit status 2."""
    try:
        return int(run() or 0)
    except GencondError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the machine, not the input: a full disk, a read-only folder
        where = f": {err.filename}" if err.filename else ""
        print(f"{prog}: error: {err.strerror or err}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    return guarded(lambda: args._run(args), f"gencond {args.command}")


from gencond.cli import (  # noqa: E402,F401  (registration)
    bench_cmd,
    condense_cmd,
    doctor_cmd,
    eval_cmd,
    list_cmd,
    prepare_cmd,
    sample_cmd,
    sweep_cmd,
    train_cmd,
)

__all__ = ["build_parser", "command", "guarded", "main"]
