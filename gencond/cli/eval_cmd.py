"""``gencond eval``: train networks on a condensed set or a real subset, test on real data."""

from __future__ import annotations

import argparse
from pathlib import Path

from gencond.cli import command
from gencond.config import add_config_arguments, build_config
from gencond.evaluate import EvalConfig, run_eval
from gencond.evaluate.protocol import FULL
from gencond.files import write_json
from gencond.methods import get_method


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file with EvalConfig fields (flags override it)")
    add_config_arguments(parser, EvalConfig)


def default_json_path(cfg: EvalConfig) -> Path:
    dataset = cfg.dataset.replace("npz:", "npz-").replace("/", "_").strip("._")
    source = "generator" if cfg.checkpoint else "condensed" if cfg.condensed else cfg.select
    return Path("results") / f"eval-{dataset}-{source}.json"


@command("eval", help="evaluate condensed sets or real subsets by training networks from scratch", add_arguments=add_arguments)
def run(args: argparse.Namespace) -> None:
    cfg = build_config(EvalConfig, args, args.config)
    uses_selection = not (cfg.checkpoint or cfg.condensed or cfg.select == FULL)
    select = get_method(cfg.select, kind="selection").fn if uses_selection else None
    report = run_eval(cfg, select=select)
    path = Path(cfg.json) if cfg.json else default_json_path(cfg)
    write_json(path, report)
    print(f"results written to {path}")
