"""Cost model of a generator run: FLOPs of one training step, counted, and from them a
projection of GPU hours, all-reduce bytes and model-state memory (a projection, not a
measurement: no GPU was used).

Runs the method's own trainer for a few steps of each phase on the CPU (on the synthetic
ImageNet stand-in for the ImageNet-1K config: the step's cost depends on the shapes, not on
the pixels). The first step of each phase is counted with ``torch.utils.flop_counter``
(forward and backward of everything the step runs: generator, critic with gradient
penalty, pool network training, matching, codebook losses); the others are timed on this
CPU, beside their floor: the FLOPs at this CPU's faster measured fp32 rate, a large matrix
product's or a ConvNet-3 convolution's (oneDNN runs the second faster on AVX-512). Model
states are counted from the modules data parallelism synchronises (their
gradients are what is all-reduced every step). Reading real images is timed too (the loader
is synchronous, so it is time the step waits), and the projection says how many images per
second each GPU would have to be fed. ``--variants`` runs the same steps again
with bf16 autocast and/or the compiled generator and prints their step times as ratios to
fp32 (on a CPU these say little about a GPU: no bf16 units here, and inductor's CPU
kernels are not its GPU kernels).

    python -m experiments.imagenet_cost.cost_model --method dim --config configs/dim/imagenet.yaml \\
        --set data_root=runs/synthetic_imagenet --json experiments/imagenet_cost/cost_model_dim_imagenet.json
"""

from __future__ import annotations

import dataclasses

import torch

from experiments._common import add_set_argument, cpu_rates
from gencond.cli import guarded
from gencond.config import (
    OneLineParser,
    config_with_sets,
    variant_config,
)
from gencond.engine import resolve_device
from gencond.errors import GencondError
from gencond.evaluate.protocol import format_rows
from gencond.evaluate.report import BenchmarkReport
from gencond.methods.codebook import CodebookConfig, CodebookTrainer
from gencond.methods.dim import DiMConfig, DiMTrainer
from gencond.training.profiling import measure_steps, step_config

METHODS = {"dim": (DiMConfig, DiMTrainer), "codebook": (CodebookConfig, CodebookTrainer)}
IMAGENET_TRAIN_IMAGES = 1_281_167
VARIANTS = ("bf16", "compile", "compile+bf16")


def step_variant(cfg, variant: str, backend: str, work_dir: str):
    """``cfg`` as bf16 (autocast), compile (the generator, with ``backend``) or
    compile+bf16, writing to its own folder; checked (a bad backend ends with one line)."""
    parts = set(variant.split("+"))
    return variant_config(type(cfg), cfg, variant, {
        "output_dir": f"{work_dir}/{variant}", "mixed_precision": "bf16" if "bf16" in parts else "no",
        "compile": backend if "compile" in parts else "no"})


def mean(values: list[float]) -> float:
    return sum(values) / max(1, len(values))


def mean_seconds(record: dict) -> float:
    return mean(record["seconds"])


def real_images_per_step(method: str, cfg, num_classes: int) -> int:
    if method == "dim":
        return cfg.batch_size
    return cfg.association_size * (cfg.classes_per_step or num_classes)


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=sorted(METHODS), default="dim")
    parser.add_argument("--config", default="configs/dim/imagenet.yaml")
    add_set_argument(parser)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per phase (after the counted one)")
    parser.add_argument("--train-images", type=int, default=IMAGENET_TRAIN_IMAGES,
                        help="training images of the projected run (ImageNet-1K's by default)")
    parser.add_argument("--peak-tflops", type=float, default=989.0,
                        help="GPU peak (default: H100 SXM, dense bf16, 989 TFLOP/s)")
    parser.add_argument("--utilisation", type=float, default=0.35,
                        help="share of the peak a step reaches (small convnets at 64x64 rarely exceed ~35 %%)")
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=[],
                        help="also time the steps with bf16 autocast and/or the compiled generator (each its own "
                             "run after the fp32 one, on the same steps), as ratios to fp32")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend of the compile variants")
    parser.add_argument("--work-dir", default="runs/cost_model")
    parser.add_argument("--json", default="experiments/imagenet_cost/cost_model.json")
    args = parser.parse_args()
    if min(args.steps, args.train_images, *args.gpus) <= 0 or not 0 < args.utilisation <= 1 or args.peak_tflops <= 0:
        raise GencondError("--steps, --train-images, --gpus and --peak-tflops must be positive, --utilisation in (0, 1]")

    config_cls, trainer_class = METHODS[args.method]
    cfg = config_with_sets(config_cls, args.config, args.set)
    epochs = cfg.phase_epochs()
    run_cfg = dataclasses.replace(step_config(cfg, args.steps, args.work_dir), mixed_precision="no", compile="no")
    variants = {variant: step_variant(run_cfg, variant, args.compile_backend, args.work_dir) for variant in args.variants}
    report = BenchmarkReport("cost model", vars(args), resolve_device("cpu"))
    phases, info, states = measure_steps(trainer_class, run_cfg)
    images = real_images_per_step(args.method, cfg, info.num_classes)
    rate = args.peak_tflops * 1e12 * args.utilisation
    cpu = cpu_rates()
    cpu_rate = max(cpu.values())
    params = sum(states.values())
    rows, projection = [], []
    for phase, record in sorted(phases.items()):
        cpu_s, data_s, read = mean_seconds(record), mean(record["data_seconds"]), mean(record["images_read"])
        rows.append([str(phase), f"{record['flops'] / 1e12:.3f}", f"{cpu_s:.2f}", f"{record['flops'] / cpu_s / 1e9:.1f}",
                     f"{record['flops'] / cpu_rate:.2f} ({cpu_s * cpu_rate / record['flops']:.1f}x)",
                     f"{read:.0f}", f"{data_s:.2f} ({data_s / cpu_s:.1%})", f"{read / max(data_s, 1e-9):,.0f}"])
        gpu_step_s = record["flops"] / rate
        for gpus in args.gpus:
            steps = args.train_images // (images * gpus)
            hours = steps * gpu_step_s / 3600
            projection.append({"phase": phase, "gpus": gpus, "steps_per_epoch": steps, "hours_per_epoch": hours,
                               "epochs": epochs[phase], "hours": hours * epochs[phase],
                               "images_per_s_read_per_gpu": read / gpu_step_s})
    print(f"{args.method} ({args.config}{', ' + ', '.join(args.set) if args.set else ''}): {info.num_classes} classes, "
          f"{info.image_size}x{info.image_size}, {images} real images per step and process\n")
    print(f"this CPU's fp32 rates ({torch.get_num_threads()} thread(s)): matrix product {cpu['matmul'] / 1e9:.0f} "
          f"GFLOP/s (2048x2048), convolution {cpu['conv'] / 1e9:.0f} GFLOP/s (3x3, 128 channels, 16x16); "
          f"the floor of a step is its FLOPs at the faster\n")
    print(format_rows(["phase", "TFLOP per step (counted)", "s per step (this CPU)", "GFLOP/s (this CPU)",
                       "floor s (step / floor)", "real images read per step", "s reading them (share of the step)", "images/s read"], rows))
    print(f"\nprojection at {args.peak_tflops:.0f} TFLOP/s x {args.utilisation:.0%} = {rate / 1e12:.0f} TFLOP/s per GPU, "
          f"{args.train_images:,} training images (global batch = per-process batch x GPUs):\n")
    print(format_rows(["phase", "GPUs", "steps per epoch", "h per epoch", "epochs", "h",
                       "images/s each GPU must be fed"],
                      [[str(p["phase"]), str(p["gpus"]), f"{p['steps_per_epoch']:,}", f"{p['hours_per_epoch']:.3g}",
                        str(p["epochs"]), f"{p['hours']:.3g}", f"{p['images_per_s_read_per_gpu']:,.0f}"]
                       for p in projection]))
    ratios = []
    for variant, variant_cfg in variants.items():
        timed, _, _ = measure_steps(trainer_class, variant_cfg, count=False)
        for phase, record in sorted(timed.items()):
            ratios.append({"variant": variant, "phase": phase, "cpu_seconds": record["seconds"],
                           "ratio_to_fp32": mean_seconds(record) / mean_seconds(phases[phase])})
    if ratios:
        print(f"\nstep time beside fp32 (this CPU; the first step of each phase, where compilation happens, "
              f"not timed; compile backend {args.compile_backend}):\n")
        print(format_rows(["variant", "phase", "s per step", "x fp32"],
                          [[r["variant"], str(r["phase"]), f"{mean(r['cpu_seconds']):.2f}",
                            f"{r['ratio_to_fp32']:.2f}"] for r in ratios]))
    print(f"\nsynchronised parameters {params:,} ({', '.join(f'{k} {v:,}' for k, v in states.items())}): all-reduce "
          f"{4 * params / 2**20:.1f} MiB of fp32 gradients per step; weights + gradients + Adam's two moments "
          f"{16 * params / 2**20:.1f} MiB per GPU before activations (not measured: no GPU)")
    report.add(method=args.method, config=dataclasses.asdict(cfg), real_images_per_step=images,
               phases={str(k): {"tflops_per_step": v["flops"] / 1e12, "cpu_seconds": v["seconds"],
                                "data_seconds": v["data_seconds"], "images_read": v["images_read"]}
                       for k, v in phases.items()},
               cpu_flops_per_s=cpu, floor_flops_per_s=cpu_rate, synchronised_parameters=states,
               allreduce_bytes_per_step=4 * params, model_state_bytes_per_gpu=16 * params, projection=projection,
               step_time_variants=ratios)
    report.write(args.json)


if __name__ == "__main__":
    raise SystemExit(guarded(main, "cost_model.py"))
