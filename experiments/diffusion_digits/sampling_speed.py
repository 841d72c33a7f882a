"""Sampling images/s of the shipped digits generators: the diffusion generator at several
sampler settings beside DiM and the codebook generator, in one process, each timed as the
median of ``--repeats`` draws of a fixed set after one warm-up draw of the same size.

    python -m experiments.diffusion_digits.sampling_speed --json experiments/diffusion_digits/sampling_speed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from gencond.models import load_generator
from gencond.runtime import cpu_description
from gencond.serve import sample_set

ROOT = Path(__file__).resolve().parents[2]


def images_per_second(generator, inpc: int, repeats: int) -> tuple[float, float]:
    sample_set(generator, inpc, seed=99)  # warm-up at the same shapes (oneDNN builds its kernels per shape)
    seconds = []
    for seed in range(repeats):
        start = time.perf_counter()
        sample_set(generator, inpc, seed=seed)
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return round(inpc * generator.num_classes / median, 1), round(median, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--inpc", type=int, default=10, help="images per class per timed draw of the diffusion model")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", nargs="+", default=["no"], help="the UNet's precision while sampling")
    parser.add_argument("--samplers", nargs="+", default=["ddim", "dpm"])
    parser.add_argument("--others", action=argparse.BooleanOptionalAction, default=True,
                        help="also time DiM and the codebook generator")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    diffusion = load_generator(ROOT / "checkpoints" / "diffusion_digits")
    for sampler in args.samplers:
        for steps in args.steps:
            for guidance in (diffusion.guidance_scale, 1.0):
                for precision in args.precision:
                    served = diffusion.with_sampler(sampler, steps, guidance, precision)
                    rate, median = images_per_second(served, args.inpc, args.repeats)
                    rows.append({"generator": "diffusion_digits", **served.sampling_description(), "inpc": args.inpc,
                                 "images_per_s": rate, "median_s": median})
                    print(rows[-1], flush=True)
    for name in ("dim_digits", "codebook_digits") if args.others else ():
        rate, median = images_per_second(load_generator(ROOT / "checkpoints" / name), 100, args.repeats)
        rows.append({"generator": name, "inpc": 100, "images_per_s": rate, "median_s": median})
        print(rows[-1], flush=True)
    report = {"machine": cpu_description(), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
