"""Known answers of the FLOP counter the cost scripts use (gencond.evaluate.cost)."""

import torch
from torch import nn

from gencond.evaluate.cost import FlopCounter


def test_counts_products_and_convolutions_forward_and_backward():
    a, b = torch.randn(5, 7), torch.randn(7, 3)
    with FlopCounter() as counter:
        a @ b
    assert counter.flops == 2 * 5 * 7 * 3

    conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    forward = 2 * (4 * 6 * 6) * (2 * 3 * 3)  # a multiply-add per output element and kernel tap
    with FlopCounter() as counter:
        conv(x).sum().backward()
    assert counter.flops == 3 * forward  # backward: input gradient + weight gradient, one forward each
