"""Why the CIFAR-10-subset diffusion generator cannot serve with DDIM's consistent clipping rule:
the colour statistics of a small fixed set (8 images per class, no guidance) under each serving
rule, beside real training images. Saturation is max minus min over the RGB channels of a pixel,
averaged; "clipped" the share of pixel values at 0 or 1 in [0, 1] colour space.

    python -m experiments.diffusion_cifar10_subset.colour --generator runs/diffusion_cifar10_subset/generator \\
        --json experiments/diffusion_cifar10_subset/colour.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from gencond.data import DataConfig
from gencond.engine import resolve_device
from gencond.models import load_generator
from gencond.serve import sample_set

RULES = {"ddim, consistent": {"ddim_clip": "consistent"}, "ddim, image": {"ddim_clip": "image"},
         "dpm": {"sampler": "dpm"}}


def colour_stats(images: torch.Tensor) -> dict:
    """Mean saturation, mean per-image std and the clipped share of images in [0, 1], (N, 3, H, W)."""
    saturation = images.amax(1) - images.amin(1)
    clipped = ((images <= 1 / 255) | (images >= 1 - 1 / 255)).float()
    return {"saturation": round(saturation.mean().item(), 3), "image_std": round(images.flatten(1).std(1).mean().item(), 3),
            "clipped": round(clipped.mean().item(), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", required=True)
    parser.add_argument("--inpc", type=int, default=8)
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--real", type=int, default=800, help="real training images to compare with")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    generator = load_generator(args.generator, resolve_device("auto"))
    record = generator.training_record
    data = DataConfig(dataset=record["dataset"], data_root=record.get("data_root", "data"), seed=record["seed"])
    info = generator.info
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (info.mean, info.std))
    real = data.load_splits().train.pixels(torch.arange(args.real)).float() / 255
    rows = {f"real training images (first {args.real})": colour_stats(real)}
    for name, rule in RULES.items():
        served = generator.with_sampler(guidance_scale=args.guidance, **rule)
        images = sample_set(served, args.inpc, 0).images
        rows[name] = colour_stats((images * std + mean).clamp(0, 1))
    for name, row in rows.items():
        print(f"{name:34s} " + ", ".join(f"{k} {v}" for k, v in row.items()))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
