"""Cost model of a generator run: FLOPs of one training step, counted, and from them a
projection of GPU hours, all-reduce bytes and model-state memory (a projection, not a
measurement: no GPU was used).

Runs the method's own trainer for a few steps of each phase on the CPU (on the synthetic
ImageNet stand-in for the ImageNet-1K config: the step's cost depends on the shapes, not on
the pixels). The first step of each phase is counted with ``torch.utils.flop_counter``
(forward and backward of everything the step runs: generator, critic with gradient
penalty, pool network training, matching, codebook losses); the others are timed on this
CPU. Model states are counted from the modules data parallelism synchronises (their
gradients are what is all-reduced every step).

    python scripts/cost_model.py --method dim --config configs/dim/imagenet.yaml \\
        --set data_root=runs/synthetic_imagenet --json results/cost_model_dim_imagenet.json
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from gencond.evaluate.protocol import format_rows
from gencond.evaluate.report import BenchmarkReport, add_set_argument, config_with_sets
from gencond.methods.codebook import CodebookConfig, CodebookTrainer
from gencond.methods.dim import DiMConfig, DiMTrainer
from gencond.training import resolve_device
from gencond.training.generator import run_trainer

METHODS = {"dim": (DiMConfig, DiMTrainer), "codebook": (CodebookConfig, CodebookTrainer)}
IMAGENET_TRAIN_IMAGES = 1_281_167


class FlopCounter(TorchDispatchMode):
    """Total FLOPs of the operators run inside it, by torch's own formulas
    (``torch.utils.flop_counter``). ``FlopCounterMode`` itself tracks modules with
    backward hooks, which the critic's gradient penalty (``autograd.grad`` with
    ``create_graph``) does not support; counting at the dispatcher needs no hooks."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        return out


def measure_steps(trainer_class, cfg) -> tuple[dict, object, dict]:
    """Run ``cfg`` with the trainer's ``train_step`` wrapped: per phase, the FLOPs of its
    first step and the seconds of the others; the model states of the synchronised
    modules (parameters that learn); and the run's dataset description."""
    original, phases, states = trainer_class.train_step, {}, {}

    def train_step(self, ctx, item):
        record = phases.setdefault(getattr(ctx, "phase", 1), {"flops": None, "seconds": []})
        if record["flops"] is None:
            with FlopCounter() as counter:
                out = original(self, ctx, item)
            record["flops"] = counter.flops
        else:
            start = time.perf_counter()
            out = original(self, ctx, item)
            record["seconds"].append(time.perf_counter() - start)
        if not states:
            states["info"] = self.info
            for name in self.module_names:
                module = self.accelerator.unwrap_model(getattr(self, name))
                states[name] = sum(p.numel() for p in module.parameters() if p.requires_grad)
        return out

    trainer_class.train_step = train_step
    try:
        run_trainer(trainer_class, cfg)
    finally:
        trainer_class.train_step = original
    return phases, states.pop("info"), states


def real_images_per_step(method: str, cfg, num_classes: int) -> int:
    if method == "dim":
        return cfg.batch_size
    return cfg.association_size * (cfg.classes_per_step or num_classes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    parser.add_argument("--work-dir", default="runs/cost_model")
    parser.add_argument("--json", default="results/cost_model.json")
    args = parser.parse_args()
    if min(args.steps, args.train_images, *args.gpus) <= 0 or not 0 < args.utilisation <= 1 or args.peak_tflops <= 0:
        raise SystemExit("--steps, --train-images, --gpus and --peak-tflops must be positive, --utilisation in (0, 1]")

    config_cls, trainer_class = METHODS[args.method]
    cfg = config_with_sets(config_cls, args.config, args.set)
    epochs = {1: cfg.gan_epochs, 2: cfg.match_epochs} if args.method == "dim" else {1: cfg.epochs}
    run_cfg = dataclasses.replace(cfg, output_dir=args.work_dir, steps_per_epoch=args.steps + 1, sample_every=0,
                                  keep_every=0, select_by="last", mixed_precision="no",
                                  **({"gan_epochs": 1, "match_epochs": 1} if args.method == "dim" else {"epochs": 1}))
    report = BenchmarkReport("cost model", vars(args), resolve_device("cpu"))
    phases, info, states = measure_steps(trainer_class, run_cfg)
    images = real_images_per_step(args.method, cfg, info.num_classes)
    rate = args.peak_tflops * 1e12 * args.utilisation
    params = sum(states.values())
    rows, projection = [], []
    for phase, record in sorted(phases.items()):
        cpu_s = sum(record["seconds"]) / max(1, len(record["seconds"]))
        rows.append([str(phase), f"{record['flops'] / 1e12:.3f}", f"{cpu_s:.2f}", f"{record['flops'] / cpu_s / 1e9:.1f}"])
        for gpus in args.gpus:
            steps = args.train_images // (images * gpus)
            hours = steps * record["flops"] / rate / 3600
            projection.append({"phase": phase, "gpus": gpus, "steps_per_epoch": steps, "hours_per_epoch": hours,
                               "epochs": epochs[phase], "hours": hours * epochs[phase]})
    print(f"{args.method} ({args.config}{', ' + ', '.join(args.set) if args.set else ''}): {info.num_classes} classes, "
          f"{info.image_size}x{info.image_size}, {images} real images per step and process\n")
    print(format_rows(["phase", "TFLOP per step (counted)", "s per step (this CPU)", "GFLOP/s (this CPU)"], rows))
    print(f"\nprojection at {args.peak_tflops:.0f} TFLOP/s x {args.utilisation:.0%} = {rate / 1e12:.0f} TFLOP/s per GPU, "
          f"{args.train_images:,} training images (global batch = per-process batch x GPUs):\n")
    print(format_rows(["phase", "GPUs", "steps per epoch", "h per epoch", "epochs", "h"],
                      [[str(p["phase"]), str(p["gpus"]), f"{p['steps_per_epoch']:,}", f"{p['hours_per_epoch']:.3g}",
                        str(p["epochs"]), f"{p['hours']:.3g}"] for p in projection]))
    print(f"\nsynchronised parameters {params:,} ({', '.join(f'{k} {v:,}' for k, v in states.items())}): all-reduce "
          f"{4 * params / 2**20:.1f} MiB of fp32 gradients per step; weights + gradients + Adam's two moments "
          f"{16 * params / 2**20:.1f} MiB per GPU before activations (not measured: no GPU)")
    report.add(method=args.method, config=dataclasses.asdict(cfg), real_images_per_step=images,
               phases={str(k): {"tflops_per_step": v["flops"] / 1e12, "cpu_seconds": v["seconds"]} for k, v in phases.items()},
               synchronised_parameters=states, allreduce_bytes_per_step=4 * params,
               model_state_bytes_per_gpu=16 * params, projection=projection)
    report.write(args.json)


if __name__ == "__main__":
    main()
