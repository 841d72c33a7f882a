"""``gencond sweep METHOD``: train variants of a method's config and score their fixed sets
on a validation split carved from the training data (see :mod:`gencond.methods.sweep`).

    gencond sweep dim --config configs/dim/digits.yaml --variant 'as shipped={}' \\
        --variant 'lr 1e-4={lr: 0.0001}' --inpc 1 10 --seeds 2
"""

from __future__ import annotations

import argparse

from gencond.cli import command
from gencond.config import add_config_arguments, build_config
from gencond.methods import list_methods
from gencond.methods.sweep import TRAINED_KINDS, SweepConfig, run_sweep


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("method", choices=sorted(name for kind in TRAINED_KINDS for name in list_methods(kind)),
                        help="the generator or pixel method whose config the variants change")
    add_config_arguments(parser, SweepConfig)


@command("sweep", help="choose a method's settings on a validation split: train config variants, score their "
                       "fixed sets on held-out training images (never the test split)", add_arguments=add_arguments)
def run(args: argparse.Namespace) -> None:
    run_sweep(args.method, build_config(SweepConfig, args))
