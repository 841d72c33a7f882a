"""Choosing a generator state by held-out data, never by the test split.

The validation score of a generator is the accuracy, on the validation split carved from
the training data (:attr:`DatasetSplits.validation`), of a ConvNet-3 trained briefly from
scratch on one fixed set drawn from the generator: the evaluation protocol in miniature,
so the score ranks states the way the final fixed-protocol evaluation would.
"""

from __future__ import annotations

import torch
from torch import nn

from gencond.data.base import DatasetInfo, ImageSet
from gencond.engine.networks import (
    IndexedData,
    TrainConfig,
    test_accuracy,
    train_network,
)
from gencond.engine.sampling import generate_in_batches, set_latents
from gencond.models import create_network


@torch.no_grad()
def draw_fixed_set(gen: nn.Module, num_classes: int, inpc: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(images in the dataset's normalized space, labels) on the CPU for the first
    ``num_classes`` classes: positions 0..inpc-1 of every class (a codebook's first codes;
    fixed noise for DiM), drawn as :func:`~gencond.engine.sampling.sample_set` draws them,
    in eval mode; a generator in training is put back in train mode after."""
    labels = torch.arange(num_classes).repeat_interleave(inpc)
    latents = set_latents(gen, torch.arange(num_classes), inpc, seed)
    was_training = gen.training
    images = generate_in_batches(gen, labels, latents)
    gen.train(was_training)
    return images, labels


def validation_score(gen: nn.Module, info: DatasetInfo, validation: ImageSet, inpc: int, epochs: int,
                     seed: int, device: torch.device) -> float:
    """Validation accuracy (%) of a ConvNet-3 trained ``epochs`` on ``inpc`` images per class
    drawn from ``gen`` (the same draw and network initialisation for every state)."""
    images, labels = draw_fixed_set(gen, gen.num_classes, inpc, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = create_network("convnet3", info.num_classes, info.channels, info.image_size)
        train_network(net, IndexedData.from_tensors(images, labels), TrainConfig(epochs=epochs), device, seed)
    return test_accuracy(net, validation, device)
