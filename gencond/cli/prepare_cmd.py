"""``gencond prepare``: decode a dataset once into uint8 arrays that ``prepared:DIR`` reads."""

from __future__ import annotations

import argparse
import os

from gencond.cli import command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="a dataset name gencond reads (imagenet, tinyimagenet, cifar10, npz:PATH, ...) "
                                        "or hf:PATH (a Hugging Face datasets folder: save_to_disk or parquet files "
                                        "with an image and a label column)")
    parser.add_argument("--output", required=True, help="the folder to write; train and evaluate read it as "
                                                        "prepared:FOLDER")
    parser.add_argument("--image-size", type=int, default=0, help="side of the square images (ImageFolder and hf: "
                                                                  "datasets are resized and centre-cropped; 0 = the "
                                                                  "dataset's own)")
    parser.add_argument("--data-root", default="data", help="where named datasets live")
    parser.add_argument("--download", action="store_true", help="allow torchvision to download the dataset")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoding processes (default: the "
                                                                                "CPU count)")
    parser.add_argument("--chunk", type=int, default=1024, help="images a process decodes between two entries of the "
                                                                "resume log")


@command("prepare", help="decode a dataset once into memory-mapped uint8 arrays (read as prepared:DIR); "
                         "a killed run resumes", add_arguments=add_arguments)
def run(args: argparse.Namespace) -> None:
    from gencond.data import prepare

    meta = prepare(args.dataset, args.output, args.image_size, args.data_root, args.download, args.workers, args.chunk)
    counts = ", ".join(f"{name} {s['count']:,} images" + (f" ({s['skipped']} unreadable, listed in "
                                                           f"{args.output}/{name}/skipped.txt)" if s["skipped"] else "")
                       for name, s in meta["splits"].items())
    print(f"prepared:{args.output}: {counts}, {meta['info']['image_size']}x{meta['info']['image_size']}")
