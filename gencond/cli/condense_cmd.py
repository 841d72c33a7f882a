"""``gencond condense METHOD``: run a selection or pixel method and write the condensed set.

    gencond condense dm --config configs/dm/mnist_subset.yaml --ipc 10
    gencond condense herding --dataset mnist --data-root ../shared/data --ipc 1

The file it writes is what ``gencond eval --condensed FILE`` reads.
"""

from __future__ import annotations

import argparse

from gencond.cli import command
from gencond.config import build_config, config_parser
from gencond.errors import GencondError
from gencond.methods import get_method, list_methods

KINDS = ("selection", "pixel")


def condense_methods() -> list[str]:
    return sorted(name for kind in KINDS for name in list_methods(kind))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("method", help=f"the method to run: {', '.join(condense_methods())}")
    parser.add_argument("options", nargs=argparse.REMAINDER, help="--config FILE and config flags "
                                                                 "(see gencond condense METHOD --help)")


@command("condense", help="condense a dataset with a selection or pixel method (random, herding, kcenter, "
                          "kmeans, dm, dc, dsa, idc)", add_arguments=add_arguments)
def run(args: argparse.Namespace) -> None:
    from gencond.methods.base import condense

    method = get_method(args.method)
    if method.kind not in KINDS:
        raise GencondError(f"{args.method} trains a generator: use gencond train {args.method}")
    options = config_parser(method.config, f"gencond condense {args.method}", method.summary).parse_args(args.options)
    condense(args.method, build_config(method.config, options, options.config))
