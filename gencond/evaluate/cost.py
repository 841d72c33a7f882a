"""What a step costs, counted and at best: FLOPs through torch's own formulas, and this
CPU's matrix-product and convolution rates, so FLOPs / rate is a step's floor. Shared by
the benchmark scripts (``cost_model.py``, ``speed_vs_official.py``)."""

from __future__ import annotations

import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry


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
