"""Batch norm over the global batch (gencond.engine.parallel): known answers against
``nn.BatchNorm`` on the whole batch, in one process and in two gloo processes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from gencond.engine.parallel import GlobalBatchNorm, convert_global_batchnorm

# Each of 2 processes normalises its half (positions rank, rank + 2, ...) of one batch;
# outputs, input gradients, summed parameter gradients and running statistics must be
# those of nn.BatchNorm2d on the whole batch.
DRIVER = """
import sys
import torch, torch.distributed as dist
from pathlib import Path
from torch import nn
from gencond.engine.parallel import GlobalBatchNorm

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
x, w = torch.randn(8, 3, 4, 4) * 3 + 1, torch.randn(8, 3, 4, 4)
ref, bn = nn.BatchNorm2d(3), GlobalBatchNorm(3)
with torch.no_grad():
    ref.weight.uniform_(0.5, 1.5); ref.bias.uniform_(-1, 1)
    bn.weight.copy_(ref.weight); bn.bias.copy_(ref.bias)
full = x.clone().requires_grad_(True)
expected = ref(full)
(expected * w).sum().backward()
half = x[rank::2].clone().requires_grad_(True)
out = bn(half)
(out * w[rank::2]).sum().backward()
grads = torch.cat([bn.weight.grad, bn.bias.grad])
dist.all_reduce(grads)
close = lambda a, b: torch.allclose(a, b, atol=1e-5, rtol=1e-5)
assert close(out, expected[rank::2]), "output"
assert close(half.grad, full.grad[rank::2]), "input gradient"
assert close(grads, torch.cat([ref.weight.grad, ref.bias.grad])), "parameter gradients"
assert close(bn.running_mean, ref.running_mean) and close(bn.running_var, ref.running_var), "running statistics"
Path(sys.argv[1], f"rank{rank}.ok").touch()
dist.destroy_process_group()  # else gloo's threads may still run at exit: "terminate called", SIGABRT
"""


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun test")
def test_two_processes_normalise_their_halves_as_one_batch_norm_over_the_whole_batch(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(driver),
           str(tmp_path)]  # --standalone: a free port
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    child_lines = [line for line in result.stderr.splitlines() if "Warning" not in line and "all_reduce(" not in line]
    assert result.returncode == 0, "\n".join(child_lines[:20])  # the child's own error precedes torchrun's
    assert sorted(path.name for path in tmp_path.glob("*.ok")) == ["rank0.ok", "rank1.ok"]


def test_outside_a_process_group_it_is_batch_norm_and_conversion_keeps_the_parameters():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3)))
    net[1].running_mean.fill_(0.5)
    before = {key: value.clone() for key, value in net.state_dict().items()}
    weight = net[1].weight
    converted = convert_global_batchnorm(net)
    assert isinstance(converted[1], GlobalBatchNorm) and isinstance(converted[2][1], GlobalBatchNorm)
    assert converted[1].weight is weight  # an optimiser built before the conversion still steps it
    after = converted.state_dict()
    assert list(after) == list(before) and all(torch.equal(before[key], after[key]) for key in before)
    x = torch.randn(8, 6, 5)
    assert torch.allclose(GlobalBatchNorm(6)(x), nn.BatchNorm1d(6)(x))
    with pytest.raises(ValueError, match="2D, 3D or 4D"):
        GlobalBatchNorm(6)(torch.randn(6))
