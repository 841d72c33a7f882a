"""``gencond sample``: draw exactly INPC images per class from a trained generator."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from gencond.artifacts import load_generator
from gencond.cli import command
from gencond.errors import GencondError
from gencond.serve import sample_set
from gencond.serve.export import FORMATS, write_sampled
from gencond.training.networks import resolve_device

SHIPPED = Path(__file__).resolve().parents[2] / "checkpoints" / "dim_digits"


def default_checkpoint() -> Path:
    if not SHIPPED.is_dir():
        raise GencondError(f"no --checkpoint given and the shipped generator is missing at {SHIPPED}")
    return SHIPPED


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inpc", type=int, required=True, help="images per class")
    parser.add_argument("--checkpoint", type=Path, help=f"generator folder (default: the shipped {SHIPPED.name})")
    parser.add_argument("--out", type=Path, help="output folder (png) or file (npz, pt); default samples/inpc<N>")
    parser.add_argument("--format", default="png", choices=FORMATS, help="png: ImageFolder tree; others: condensed set file")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same images")
    parser.add_argument("--classes", type=int, nargs="+", help="class indices to draw (default: all)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--device", default="auto")


@command("sample", help="draw INPC images per class from a generator (ImageFolder PNGs or a condensed set file)",
         add_arguments=add_arguments)
def run(args: argparse.Namespace) -> None:
    generator = load_generator(args.checkpoint or default_checkpoint(), resolve_device(args.device))
    start = time.perf_counter()
    condensed = sample_set(generator, args.inpc, args.seed, args.classes, args.batch_size)
    seconds = time.perf_counter() - start
    out = args.out or Path("samples") / f"inpc{args.inpc}"
    path = write_sampled(condensed, out, args.format)
    print(f"{len(condensed)} images ({args.inpc} per class, {len(set(condensed.labels.tolist()))} classes) "
          f"generated in {seconds:.2f} s ({len(condensed) / max(seconds, 1e-9):.0f} images/s), written to {path}")
