"""What the experiment drivers share and the package does not need.

- What a step costs at best: this CPU's matrix-product and convolution rates, so FLOPs /
  rate is a step's floor (the FLOPs and seconds of a method's own steps are measured by
  :mod:`gencond.training.profiling`). Used by ``imagenet_cost/cost_model.py``
  and ``speed_vs_official/speed_vs_official.py``.
- :func:`rss_mib`: resident memory of a process tree (``serving_load``, ``imagenet_cost``).
- :func:`add_set_argument`: a driver's repeatable ``--set KEY=VALUE`` (read by
  ``gencond.config.config_with_sets``).

Drivers run as modules from the repository root (``python -m experiments.STUDY.DRIVER``),
so ``experiments._common`` imports without any path set-up."""

from __future__ import annotations

import time
from pathlib import Path

import torch


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
