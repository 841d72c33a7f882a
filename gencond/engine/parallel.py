"""Data parallelism that does not change the step: batch normalisation over the global batch.

Under data parallelism each process normalises its own share of the batch, so N processes
with batch B/N take other steps than one process with batch B. :class:`GlobalBatchNorm`
normalises over every process's share (two all-reduces per layer, differentiable: the
gradient reaching one process's images through the statistics includes every process's
loss). ``torch.nn.SyncBatchNorm`` does the same on GPUs but refuses CPU tensors; this one
runs on any backend (gloo on the CPU, NCCL on GPUs). Outside a multi-process group, or in
eval mode, it is ``nn.BatchNorm``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def world_size() -> int:
    """Processes in the initialised ``torch.distributed`` group; 1 without one."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over processes: the gradient of a sum over processes is the sum
    of every process's gradient (``torch.distributed.nn.functional.all_reduce``, which is
    deprecated)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        total = x.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(x)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over (N, C), (N, C, L) or (N, C, H, W) whose training-mode statistics
    are those of the whole batch, every process's share; same parameters, buffers and
    state-dict keys as ``nn.BatchNorm1d`` / ``nn.BatchNorm2d``."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in (2, 3, 4):
            raise ValueError(f"expected a 2D, 3D or 4D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not (self.training and world_size() > 1):
            return super().forward(x)
        dtype, x = x.dtype, x.float()  # statistics of bf16 activations in fp32, output in their dtype
        dims, shape = [0, *range(2, x.dim())], (1, -1) + (1,) * (x.dim() - 2)
        count = torch.tensor([x.numel() // x.shape[1]], dtype=x.dtype, device=x.device)
        sums = all_reduce(torch.cat([x.sum(dims), count]))
        n = sums[-1]
        mean = sums[:-1] / n
        centred = x - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / n  # two passes: no cancellation
        if self.track_running_stats:
            self.update_running_stats(mean.detach(), var.detach() * n / (n - 1).clamp(min=1))
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        return (out * self.weight.view(shape) + self.bias.view(shape) if self.affine else out).to(dtype)

    @torch.no_grad()
    def update_running_stats(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        self.num_batches_tracked += 1
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean, momentum)
        self.running_var.lerp_(unbiased_var, momentum)


def convert_global_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every ``BatchNorm1d`` / ``BatchNorm2d`` replaced by a
    :class:`GlobalBatchNorm` holding the same parameter objects (an optimiser built on
    them still steps them) and copies of the buffers."""
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        converted = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                    module.track_running_stats)
        if module.affine:
            converted.weight, converted.bias = module.weight, module.bias
        for name, buffer in module.named_buffers(recurse=False):
            getattr(converted, name).copy_(buffer)
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        module.add_module(name, convert_global_batchnorm(child))
    return module
