"""Known answers of the FLOP counter the cost scripts use (gencond.evaluate.cost)."""

import torch
from torch import nn

from gencond.training.profiling import FlopCounter


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


def test_step_config_cuts_every_phase_to_one_epoch_of_the_asked_steps():
    from gencond.methods.codebook import CodebookConfig
    from gencond.methods.dim import DiMConfig
    from gencond.training.profiling import step_config

    dim = DiMConfig(gan_epochs=40, match_epochs=10, mixed_precision="bf16")
    assert dim.phase_epochs() == {1: 40, 2: 10}
    cut = step_config(dim, 3, "runs/x")
    assert cut.phase_epochs() == {1: 1, 2: 1} and cut.steps_per_epoch == 4 and cut.output_dir == "runs/x"
    assert (cut.sample_every, cut.keep_every, cut.select_by, cut.mixed_precision) == (0, 0, "last", "bf16")
    codebook = CodebookConfig(epochs=30)
    assert codebook.phase_epochs() == {1: 30} and step_config(codebook, 2, "runs/y").phase_epochs() == {1: 1}
