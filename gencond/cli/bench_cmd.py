"""``gencond bench``: a grid of training sets x INPC x architectures x augmentations x
seeds, resumable, with IOR/HLR, a markdown table and plots (see gencond.evaluate.bench)."""

from __future__ import annotations

import argparse

from gencond.cli import command
from gencond.config import add_config_arguments, build_config
from gencond.evaluate.bench import BenchConfig, bench_specs, run_bench
from gencond.evaluate.protocol import FULL, RANDOM
from gencond.methods import get_method


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file with BenchConfig fields (flags override it)")
    add_config_arguments(parser, BenchConfig)


@command("bench", help="benchmark generators and condensed sets on one grid of protocols (resumable)",
         add_arguments=add_arguments)
def run(args: argparse.Namespace) -> None:
    cfg = build_config(BenchConfig, args, args.config)
    cfg.check()
    rules = {s.source for s in bench_specs(cfg) if s.kind == "selection"} - {RANDOM, FULL}
    run_bench(cfg, {rule: get_method(rule, kind="selection").fn for rule in rules})
