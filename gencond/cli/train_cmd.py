"""``gencond train METHOD``: train a generator-type method from a YAML config plus flags.

``accelerate launch scripts/train_dim.py ...`` runs exactly the same code.
"""

from __future__ import annotations

import argparse

from gencond.cli import command, guarded
from gencond.config import build_config, config_parser
from gencond.errors import GencondError
from gencond.methods import get_method, list_methods


def method_parser(name: str, prog: str) -> argparse.ArgumentParser:
    method = get_method(name, kind="generator")
    parser = config_parser(method.config, prog, method.summary)
    parser.add_argument("--resume", action="store_true", help="continue from the training state in output_dir")
    return parser


def run_training(name: str, argv: list[str], prog: str) -> None:
    args = method_parser(name, prog).parse_args(argv)
    method = get_method(name, kind="generator")
    cfg = build_config(method.config, args, args.config)
    result = method.fn(cfg, resume=args.resume)
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(f"generator saved to {result}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("method", choices=list_methods("generator"), help="the method to train")
    parser.add_argument("options", nargs=argparse.REMAINDER, help="--config FILE, --resume and config flags "
                                                                 "(see gencond train METHOD --help)")


@command("train", help="train a generator (dim, codebook, diffusion) from a YAML config and flags", add_arguments=add_arguments)
def run(args: argparse.Namespace) -> None:
    run_training(args.method, args.options, prog=f"gencond train {args.method}")


def script_main(name: str | None, prog: str) -> None:
    """Entry point of ``scripts/train.py METHOD`` (``name`` None: the method is the first
    argument) and ``scripts/train_dim.py``: same code, same one-line errors."""
    import sys

    def run() -> None:
        argv = sys.argv[1:]
        method = name or (argv.pop(0) if argv and not argv[0].startswith("-") else "")
        if method not in list_methods("generator"):
            raise GencondError(f"usage: {prog} METHOD [--config FILE] [flags]; METHOD is one of "
                               f"{', '.join(list_methods('generator'))}, got {method or 'nothing'!r}")
        run_training(method, argv, f"{prog} {method}" if name is None else prog)

    sys.exit(guarded(run, prog))
