"""NAS-Bench-201 cell networks (Dong & Yang, ICLR 2020): the search space of DC-BENCH's
architecture-ranking protocol.

A cell is a directed acyclic graph of four nodes; each of its six edges (node i -> node
j, i < j) carries one operation of ``OPERATIONS``; a node sums its incoming edges, and the
cell outputs node 3. The network: a 3x3 convolution stem with batch norm, three stages of
``cells_per_stage`` cells of width 16, 32, 64, a residual block with stride 2 between
stages, then batch norm, ReLU, global average pooling and a linear classifier.
NAS-Bench-201 uses 5 cells per stage; DC-BENCH reduces them to 1 when ranking with
condensed data, which is this module's default.

Genotypes are written in NAS-Bench-201's string form, e.g.
``|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|``
(for node 1, 2, 3: its incoming edges as ``operation~source``).
"""

from __future__ import annotations

import random

import torch
from timm.models import register_model
from torch import nn

from gencond.errors import GencondError
from gencond.models.layers import ClassifierMixin, entry_kwargs

OPERATIONS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
__all__ = ["nb201_cell"]


def parse_genotype(genotype: str) -> list[list[tuple[str, int]]]:
    """Per node 1..3, its incoming edges as (operation, source node)."""
    nodes = []
    try:
        for j, part in enumerate(genotype.split("+"), start=1):
            edges = [tuple(e.split("~")) for e in part.strip("|").split("|")]
            nodes.append([(op, int(src)) for op, src in edges])
            if sorted(src for _, src in nodes[-1]) != list(range(j)) or any(op not in OPERATIONS for op, _ in nodes[-1]):
                raise ValueError
    except ValueError:
        nodes = []
    if len(nodes) != 3:
        raise GencondError(f"not a NAS-Bench-201 genotype: {genotype!r} (e.g. |nor_conv_3x3~0|+|skip_connect~0|"
                           "nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|)")
    return nodes


def sample_genotypes(count: int, seed: int) -> list[str]:
    """``count`` distinct genotypes drawn uniformly from the 15,625 of the space."""
    if not 0 < count <= len(OPERATIONS) ** 6:
        raise GencondError(f"the space holds {len(OPERATIONS) ** 6} genotypes; asked for {count}")
    rng, chosen = random.Random(seed), {}
    while len(chosen) < count:
        ops = [rng.choice(OPERATIONS) for _ in range(6)]
        text = f"|{ops[0]}~0|+|{ops[1]}~0|{ops[2]}~1|+|{ops[3]}~0|{ops[4]}~1|{ops[5]}~2|"
        chosen.setdefault(text, None)
    return list(chosen)


class ReLUConvBN(nn.Sequential):
    def __init__(self, channels_in: int, channels_out: int, kernel: int, stride: int = 1):
        super().__init__(nn.ReLU(), nn.Conv2d(channels_in, channels_out, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(channels_out))


class Zero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.0


def make_operation(name: str, channels: int) -> nn.Module:
    return {
        "none": Zero,
        "skip_connect": nn.Identity,
        "nor_conv_1x1": lambda: ReLUConvBN(channels, channels, 1),
        "nor_conv_3x3": lambda: ReLUConvBN(channels, channels, 3),
        "avg_pool_3x3": lambda: nn.AvgPool2d(3, 1, 1, count_include_pad=False),
    }[name]()


class Cell(nn.Module):
    def __init__(self, nodes: list[list[tuple[str, int]]], channels: int):
        super().__init__()
        self.sources = [[src for _, src in edges] for edges in nodes]
        self.edges = nn.ModuleList(nn.ModuleList(make_operation(op, channels) for op, _ in edges) for edges in nodes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = [x]
        for sources, ops in zip(self.sources, self.edges):
            states.append(sum(op(states[src]) for op, src in zip(ops, sources)))
        return states[-1]


class ResidualReduction(nn.Module):
    """NAS-Bench-201's stage transition: two ReLU-conv-BN (the first with stride 2) plus an
    average-pooled 1x1-convolution shortcut."""

    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.body = nn.Sequential(ReLUConvBN(channels_in, channels_out, 3, 2), ReLUConvBN(channels_out, channels_out, 3))
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(channels_in, channels_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class CellNetwork(ClassifierMixin, nn.Module):
    def __init__(self, genotype: str, num_classes: int = 10, in_chans: int = 3, img_size: int = 32,
                 width: int = 16, cells_per_stage: int = 1):
        super().__init__()
        nodes = parse_genotype(genotype)
        self.genotype, self.num_classes = genotype, num_classes
        layers: list[nn.Module] = [nn.Conv2d(in_chans, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)]
        channels = width
        for stage in range(3):
            if stage:
                layers.append(ResidualReduction(channels, channels * 2))
                channels *= 2
            layers += [Cell(nodes, channels) for _ in range(cells_per_stage)]
        layers += [nn.BatchNorm2d(channels), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.num_features = channels
        self.head = nn.Linear(channels, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


@register_model
def nb201_cell(pretrained: bool = False, genotype: str = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+"
               "|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|", **kwargs) -> CellNetwork:
    """A NAS-Bench-201 cell network (default genotype: 3x3 convolutions on five edges, one skip)."""
    return CellNetwork(genotype, **entry_kwargs(pretrained, kwargs))
