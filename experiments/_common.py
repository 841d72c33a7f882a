"""What the experiment drivers share and the package does not need.

- What a step costs, counted and at best: FLOPs through torch's own formulas, and this
  CPU's matrix-product and convolution rates, so FLOPs / rate is a step's floor; the FLOPs
  and seconds of a generator method's own training steps (:func:`measure_steps`). Used by
  ``imagenet_cost/cost_model.py`` and ``speed_vs_official/speed_vs_official.py``.
- :func:`rss_mib`: resident memory of a process tree (``serving_load``, ``imagenet_cost``).
- :func:`add_set_argument`: a driver's repeatable ``--set KEY=VALUE`` (read by
  ``gencond.config.config_with_sets``).

Drivers run as modules from the repository root (``python -m experiments.STUDY.DRIVER``),
so ``experiments._common`` imports without any path set-up."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from gencond.data.base import LazyImageSet, TensorImageSet
from gencond.training.trainer import run_trainer


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


def matmul_rate(side: int = 2048, repeats: int = 10) -> float:
    """This CPU's fp32 FLOP/s on a large square matrix product, at the process's threads:
    FLOPs / rate is the floor of a step made of matrix products (a convolutional step can
    run faster: :func:`conv_rate`)."""
    a, b = torch.randn(side, side), torch.randn(side, side)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * side**3 * repeats / (time.perf_counter() - start)


def conv_rate(batch: int = 256, channels: int = 128, side: int = 16, repeats: int = 5) -> float:
    """This CPU's fp32 FLOP/s on a 3x3 convolution, ``channels`` to ``channels`` on
    ``side`` x ``side`` maps, channels-last, without gradients: ConvNet-3's middle layer at
    MNIST/CIFAR size, where DM's real-image forward spends most of its time. oneDNN runs
    it faster than a large matrix product (so the matrix-product floor is no floor for a
    convolutional step)."""
    layer = torch.nn.Conv2d(channels, channels, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(batch, channels, side, side).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        for _ in range(2):
            layer(x)
        start = time.perf_counter()
        for _ in range(repeats):
            layer(x)
    return 2 * batch * channels * side * side * channels * 9 * repeats / (time.perf_counter() - start)


RATES = {"matmul": matmul_rate, "conv": conv_rate}  # a step's floor is its FLOPs at the faster of the two


def cpu_rates() -> dict[str, float]:
    """This CPU's FLOP/s by kind of operation (see ``RATES``)."""
    return {kind: rate_of() for kind, rate_of in RATES.items()}


def step_config(cfg, steps: int, output_dir: str):
    """``cfg`` cut to one epoch per phase (DiM has two: GAN, then matching) of ``steps`` + 1
    steps, without sample grids, kept epochs or validation, writing to ``output_dir``: what
    :func:`measure_steps` runs (at the config's precision and compile setting)."""
    return dataclasses.replace(cfg.one_epoch_per_phase(), output_dir=output_dir, steps_per_epoch=steps + 1,
                               sample_every=0, keep_every=0, select_by="last")


@contextlib.contextmanager
def timed_reads(reading: list[float]):
    """Add the time spent reading real images (decoding JPEGs, or indexing in-memory
    pixels) to ``reading[0]`` and their number to ``reading[1]``: the two leaf readers
    every image set ends in."""
    originals = {(LazyImageSet, "images_within"): LazyImageSet.images_within, (TensorImageSet, "images"): TensorImageSet.images}

    def timed(read):
        def wrapper(self, indices, *args):
            start = time.perf_counter()
            try:
                return read(self, indices, *args)
            finally:
                reading[0] += time.perf_counter() - start
                reading[1] += len(indices)
        return wrapper

    for (cls, name), read in originals.items():
        setattr(cls, name, timed(read))
    try:
        yield
    finally:
        for (cls, name), read in originals.items():
            setattr(cls, name, read)


def measure_steps(trainer_class, cfg, count: bool = True) -> tuple[dict, object, dict]:
    """Run ``cfg`` with the trainer's ``train_step`` wrapped: per phase, the FLOPs of its
    first step (with ``count``; otherwise that step is a warm-up, where compilation happens),
    the precision it ran in (``no`` or ``bf16``, ``auto`` resolved), the seconds of the others
    and the seconds they spent reading real images (the loader is synchronous: all of it is
    time the step waits for data); the model states of the synchronised modules (parameters
    that learn); and the run's dataset description."""
    original, phases, states, reading = trainer_class.train_step, {}, {}, [0.0, 0]

    def train_step(self, ctx, item):
        record = phases.setdefault(getattr(ctx, "phase", 1),
                                   {"flops": None, "seconds": [], "data_seconds": [], "images_read": [], "first": True})
        if record.pop("first", False):
            with FlopCounter() if count else contextlib.nullcontext() as counter:
                out = original(self, ctx, item)
            record["flops"], record["precision"] = counter.flops if count else None, self.precision
        else:
            reading[:], start = [0.0, 0], time.perf_counter()
            out = original(self, ctx, item)
            record["seconds"].append(time.perf_counter() - start)
            record["data_seconds"].append(reading[0])
            record["images_read"].append(reading[1])
        if not states:
            states["info"] = self.info
            for name in self.module_names:
                module = self.accelerator.unwrap_model(getattr(self, name))
                states[name] = sum(p.numel() for p in module.parameters() if p.requires_grad)
        return out

    trainer_class.train_step = train_step
    try:
        with timed_reads(reading):
            run_trainer(trainer_class, cfg)
    finally:
        trainer_class.train_step = original
    return phases, states.pop("info"), states


def rss_mib(pid: int) -> float:
    """Resident memory of a process and, recursively, its children (MiB; Linux /proc)."""
    total, pids = 0.0, [pid]
    while pids:
        current = pids.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:  # the process has just ended
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0) / 1024
        pids += [int(c) for c in children]
    return total


def add_set_argument(parser, help: str = "override a field of the config (a YAML value)", flag: str = "--set") -> None:
    """``--set KEY=VALUE`` (repeatable; or ``flag``, for a script with several configs), read
    by ``gencond.config.config_with_sets``."""
    parser.add_argument(flag, action="append", default=[], metavar="KEY=VALUE", help=help)
