"""``gencond doctor --gpu``: the device check. On synthetic ImageNet-style data (JPEGs written
for it, then prepared), it measures what a GPU run of gencond needs and prints each figure
beside the project's projection: the data pipeline's images/s (JPEGs through workers, the
prepared arrays), steps of DiM, the codebook generator and the diffusion model at their
ImageNet-64 configs, sampling images/s, one evaluation network and peak GPU memory.

The projection (``experiments/imagenet_cost/``) is a step's counted FLOPs at 35 % of an H100
SXM's dense bf16 peak (346 TFLOP/s) and the real images the step reads at that pace. ``--dry``
runs every part at tiny sizes on whatever device there is, as the test suite does, so the
check cannot rot between the rare sessions with a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import tempfile
import time
from pathlib import Path

import torch

from gencond.cli import command
from gencond.runtime import cpu_description, native_bf16, synchronize

PROJECTED_FLOPS = 0.35 * 989e12  # H100 SXM dense bf16 peak at the assumed 35 % utilisation
# the data each projected DiM step needs (experiments/imagenet_cost/): images/s per GPU
PROJECTED_FEED = {"dim phase 1": 11_650, "dim phase 2": 121_871}


@dataclasses.dataclass(frozen=True)
class Sizes:
    classes: int
    per_class: int  # training images per class written as JPEGs
    file_size: int  # side of the JPEGs (resized and cropped to image_size)
    image_size: int
    steps: int  # timed steps per phase (one more runs first, counted for FLOPs)
    batch: int  # images per batch of the reader checks
    workers: int
    samples: int  # images drawn per generator for the sampling rate


FULL = Sizes(classes=1000, per_class=24, file_size=80, image_size=64, steps=5, batch=256, workers=8, samples=500)
DRY = Sizes(classes=4, per_class=8, file_size=36, image_size=32, steps=1, batch=8, workers=2, samples=4)
# what the full check changes in the ImageNet configs: the codebook's feature network trains one
# epoch (not the config's), its class features average 16 of the 24 images a synthetic class has.
# One epoch per phase runs, so the diffusion step timed is the plain one (the config's minimax
# criteria start at epoch 93).
FULL_SETS = {"dim": [], "codebook": ["feature_net_epochs=1", "class_feature_images=16"], "diffusion": []}
DRY_SETS = {
    "dim": ["width=8", "batch_size=8", "pool=[convnet3]", "pool_training.batches=1", "pool_training.batch_size=8",
            "match_batch=8", "mixed_precision=no"],
    "codebook": ["codebook_size=2", "code_dim=8", "embed_dim=8", "width=8", "feature_net_epochs=0",
                 "class_feature_images=4", "association_size=2", "phi_training.batches=1",
                 "phi_training.batch_size=8", "classes_per_step=0", "phi_pool=[convnet3]", "feature_net=convnet3",
                 "mixed_precision=no"],
    "diffusion": ["block_channels=[8,16]", "layers_per_block=1", "attention_levels=[]", "batch_size=8",
                  "sampling_steps=2", "condense=false", "mixed_precision=no"],
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gpu", action="store_true", help="run the device check (without: the environment only)")
    parser.add_argument("--dry", action="store_true", help="tiny sizes on any device (what the test suite runs)")
    parser.add_argument("--configs", default="configs", help="the folder holding <method>/imagenet.yaml")
    parser.add_argument("--workdir", help="where the synthetic data and runs go (default: a temporary folder)")
    parser.add_argument("--json", help="also write the figures here")


def environment(device: torch.device) -> dict:
    gpu = {}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu = {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
               "compute_capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda}
    return {"torch": torch.__version__, "python": platform.python_version(), "device": str(device), **gpu,
            "native_bf16": native_bf16(device), **cpu_description()}


def reader_rates(splits, sizes: Sizes, device: torch.device) -> dict:
    """images/s of random batches read onto ``device``: in the training process and through
    ``sizes.workers`` loader workers (worker start-up included)."""
    from gencond.data.loader import read_batches

    count = max(4, min(64, len(splits.train) // sizes.batch))
    order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(0))
    batches = [order[(i * sizes.batch) % len(order):][:sizes.batch] for i in range(count)]
    rates = {}
    for workers in (0, sizes.workers):
        start = time.perf_counter()
        read = sum(len(labels) for _, labels in read_batches(splits.train, batches, 0, device, workers))
        rates[f"{workers} workers"] = round(read / (time.perf_counter() - start))
    return rates


def data_check(work: Path, sizes: Sizes, device: torch.device) -> tuple[dict, str]:
    """Write the synthetic JPEGs, prepare them, and read both; returns the figures and the
    prepared dataset's name."""
    from gencond.data import load_dataset, prepare
    from gencond.data.synthetic import write_synthetic_imagenet

    start = time.perf_counter()
    write_synthetic_imagenet(work / "jpeg", sizes.classes, sizes.per_class, 1, sizes.file_size)
    written = time.perf_counter() - start
    start = time.perf_counter()
    prepare("imagenet", work / "prepared", sizes.image_size, work / "jpeg", workers=sizes.workers, progress=False)
    prepared = time.perf_counter() - start
    images = sizes.classes * (sizes.per_class + 1)
    name = f"prepared:{work / 'prepared'}"
    return {"images": images, "write_jpeg_s": round(written, 2), "prepare_images_per_s": round(images / prepared),
            "imagefolder_images_per_s": reader_rates(load_dataset("imagenet", work / "jpeg", image_size=sizes.image_size),
                                                     sizes, device),
            "prepared_images_per_s": reader_rates(load_dataset(name), sizes, device)}, name


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def training_check(method: str, dataset: str, work: Path, sizes: Sizes, configs: Path, device: torch.device) -> dict:
    """Steps of ``method`` at its ImageNet config on the prepared data; per phase: seconds,
    FLOPs, real images read, the projection; and the exported generator's sampling rate."""
    from gencond.config import config_with_sets
    from gencond.methods.codebook import CodebookConfig, CodebookTrainer
    from gencond.methods.diffusion import DiffusionConfig, DiffusionTrainer
    from gencond.methods.dim import DiMConfig, DiMTrainer
    from gencond.models.generators import load_generator
    from gencond.training.profiling import measure_steps, step_config

    cls, trainer = {"dim": (DiMConfig, DiMTrainer), "codebook": (CodebookConfig, CodebookTrainer),
                    "diffusion": (DiffusionConfig, DiffusionTrainer)}[method]
    sets = [f"dataset={dataset}", f"image_size={sizes.image_size}", f"loader_workers={sizes.workers}",
            *(DRY_SETS if sizes is DRY else FULL_SETS)[method]]
    cfg = step_config(config_with_sets(cls, str(configs / method / "imagenet.yaml"), sets), sizes.steps,
                      str(work / method))
    _peak_reset(device)
    phases, _, parameters = measure_steps(trainer, cfg)
    result = {"parameters": parameters, "peak_gib": _peak_gib(device), "phases": {}}
    for number, phase in phases.items():
        seconds = sum(phase["seconds"]) / max(1, len(phase["seconds"]))
        images = sum(phase["images_read"]) / max(1, len(phase["images_read"]))
        projected = phase["flops"] / PROJECTED_FLOPS
        name = f"{method} phase {number}" if len(phases) > 1 else method
        result["phases"][name] = {
            "precision": phase["precision"], "seconds_per_step": round(seconds, 4),
            "tflop_per_step": round(phase["flops"] / 1e12, 4), "images_read_per_step": images,
            "projected_seconds_per_step": round(projected, 5),
            "projected_feed_images_per_s": round(images / projected) if projected else None,
            "measured_feed_images_per_s": round(images / seconds) if seconds else None}
    gen = load_generator(work / method / "generator", device=device)
    labels = torch.arange(sizes.samples) % gen.num_classes
    latents = gen.latents(None, sizes.samples, torch.Generator().manual_seed(0))
    with torch.no_grad():
        gen.generate(labels[:2], latents[:2])  # warm-up
        synchronize(device)
        start = time.perf_counter()
        for part in range(0, sizes.samples, 250):
            gen.generate(labels[part:part + 250], latents[part:part + 250])
        synchronize(device)
    result["sampling_images_per_s"] = round(sizes.samples / (time.perf_counter() - start), 1)
    return result


def evaluation_check(dataset: str, sizes: Sizes, device: torch.device) -> dict:
    """Training steps of ResNet-18 (the ImageNet evaluation network) on prepared batches."""
    from gencond.data import load_dataset
    from gencond.data.loader import read_batches
    from gencond.models import create_network
    from gencond.runtime import autocast, resolve_precision

    splits = load_dataset(dataset)
    net = create_network("resnet18", splits.info.num_classes, 3, sizes.image_size).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    precision = resolve_precision("auto" if sizes is FULL else "no", device)
    batches = [torch.randint(len(splits.train), (sizes.batch,), generator=torch.Generator().manual_seed(i))
               for i in range(sizes.steps + 1)]
    _peak_reset(device)
    start = None
    for pixels, labels in read_batches(splits.train, batches, 0, device, sizes.workers):
        with autocast(precision, device):
            loss = torch.nn.functional.cross_entropy(net(splits.info.from_pixels(pixels)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if start is None:  # the first step (warm-up) is not timed
            synchronize(device)
            start = time.perf_counter()
    synchronize(device)
    seconds = (time.perf_counter() - start) / max(1, sizes.steps)
    return {"network": "resnet18", "precision": precision, "batch": sizes.batch,
            "images_per_s": round(sizes.batch / seconds, 1), "peak_gib": _peak_gib(device)}


def report(figures: dict) -> str:
    """The figures as lines of text, each beside its projection where the project has one."""
    env, data = figures["environment"], figures["data"]
    lines = [f"device: {env.get('gpu', env['device'])} (torch {env['torch']}, native bf16 {env['native_bf16']})",
             f"prepare: {data['prepare_images_per_s']:,} images/s ({data['images']:,} JPEGs)"]
    for reader in ("imagefolder", "prepared"):
        rates = ", ".join(f"{k}: {v:,}" for k, v in data[f"{reader}_images_per_s"].items())
        lines.append(f"{reader} reader, images/s: {rates}")
    for method, result in figures["training"].items():
        for name, phase in result["phases"].items():
            need = PROJECTED_FEED.get(name)
            lines.append(f"{name}: {phase['seconds_per_step']:.4f} s/step ({phase['precision']}; projected H100 "
                         f"{phase['projected_seconds_per_step']:.3g}), {phase['tflop_per_step']:.3g} TFLOP, "
                         f"{phase['images_read_per_step']:.0f} real images/step: feed "
                         f"{phase['measured_feed_images_per_s'] or 0:,} images/s measured, "
                         f"{phase['projected_feed_images_per_s'] or 0:,} projected"
                         + (f" (cost study: {need:,})" if need else ""))
        lines.append(f"{method}: sampling {result['sampling_images_per_s']} images/s, peak "
                     f"{result['peak_gib']} GiB")
    ev = figures["evaluation"]
    lines.append(f"evaluation {ev['network']} ({ev['precision']}, batch {ev['batch']}): {ev['images_per_s']} "
                 f"images/s, peak {ev['peak_gib']} GiB")
    return "\n".join(lines)


def device_check(sizes: Sizes, configs: Path, work: Path) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    figures = {"sizes": dataclasses.asdict(sizes), "environment": environment(device)}
    figures["data"], dataset = data_check(work, sizes, device)
    figures["training"] = {method: training_check(method, dataset, work, sizes, configs, device)
                           for method in ("dim", "codebook", "diffusion")}
    figures["evaluation"] = evaluation_check(dataset, sizes, device)
    return figures


@command("doctor", help="the environment; with --gpu, check a GPU machine: data pipeline, training steps, sampling and evaluation at the "
                        "ImageNet-64 configs, beside the project's projection", add_arguments=add_arguments)
def run(args: argparse.Namespace) -> None:
    from gencond.errors import GencondError

    if not args.gpu:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        print("\n".join(f"{key}: {value}" for key, value in environment(device).items()))
        return
    configs = Path(args.configs)
    if not all((configs / m / "imagenet.yaml").is_file() for m in DRY_SETS):
        raise GencondError(f"{configs}: needs dim/, codebook/ and diffusion/imagenet.yaml (run from the repository "
                           "root or pass --configs)")
    if not args.dry and not torch.cuda.is_available():
        raise GencondError("no CUDA device here; gencond doctor --gpu --dry runs the check at tiny sizes on the CPU")
    with tempfile.TemporaryDirectory(prefix="gencond-doctor-") as tmp:
        figures = device_check(DRY if args.dry else FULL, configs, Path(args.workdir or tmp))
    print(report(figures))
    if args.json:
        from gencond.files import write_json

        write_json(args.json, figures)
