"""``gencond list``: the datasets, networks and methods gencond knows by name."""

from __future__ import annotations

import argparse

from gencond.cli import command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", nargs="?", choices=("datasets", "networks", "methods"), help="list only these")


@command("list", help="list the known datasets, networks and methods", add_arguments=add_arguments)
def run(args: argparse.Namespace) -> None:
    from gencond.data import list_datasets
    from gencond.methods import get_method, list_methods
    from gencond.models import GENCOND_NETWORKS

    sections = {
        "datasets": list_datasets(),
        "networks": list(GENCOND_NETWORKS) + ["(any timm model name)"],
        "methods": [f"{name} ({get_method(name).kind}): {get_method(name).summary}" for name in list_methods()],
    }
    for name, items in sections.items():
        if args.what in (None, name):
            print(f"{name}:")
            print("\n".join(f"  {item}" for item in items))
