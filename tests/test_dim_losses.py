"""Hand-made cases with known answers for DiM's losses and building blocks."""

import math

import pytest
import torch
from torch import nn

from gencond.errors import GencondError
from gencond.losses.adversarial import (
    gradient_penalty,
    wgan_discriminator_loss,
    wgan_generator_loss,
)
from gencond.losses.matching import class_means, get_matching, layerwise_distance
from gencond.methods.dim import balanced_labels
from gencond.models import create_network
from gencond.models.gan import DiMDiscriminator, DiMGenerator
from gencond.training.trainer import epoch_batches


class MeanCritic(nn.Module):
    """score = mean pixel value, class logits all zero (so class CE = log C)."""

    def __init__(self, num_classes=4):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x):
        return x.mean(dim=(1, 2, 3)), torch.zeros(len(x), self.num_classes)


@pytest.mark.parametrize("weight,expected", [(0.5, 0.0), (1.0, 1.0), (0.25, 0.25)])
def test_gradient_penalty_of_a_linear_critic(weight, expected):
    # critic(x) = sum(w * x) over 4 pixels: gradient w everywhere, norm 2w, penalty (2w - 1)^2
    x = torch.randn(3, 1, 2, 2, requires_grad=True)
    assert gradient_penalty((weight * x).sum(dim=(1, 2, 3)), x).item() == pytest.approx(expected)


def test_discriminator_loss_known_value():
    real, fake = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    labels = torch.tensor([0, 3])
    parts = wgan_discriminator_loss(MeanCritic(), real, labels, fake, labels, gp_weight=10.0, alpha=torch.rand(2))
    # wasserstein: mean critic(fake) - mean critic(real) = 0 - 1
    assert parts["wasserstein"].item() == pytest.approx(-1.0)
    assert parts["d_class"].item() == pytest.approx(2 * math.log(4))
    # critic = mean of 4 pixels: gradient 1/4 each, norm 1/2, penalty (1/2 - 1)^2
    assert parts["gp"].item() == pytest.approx(0.25)
    assert parts["loss"].item() == pytest.approx(-1 + 2 * math.log(4) + 2.5)


def test_generator_loss_known_value():
    fake = torch.full((2, 1, 2, 2), 0.5)
    assert wgan_generator_loss(MeanCritic(), fake, torch.tensor([1, 2])).item() == pytest.approx(-0.5 + math.log(4))


def test_overwrite_conditioning_writes_the_one_hot_over_the_first_noise_entries():
    gen = DiMGenerator(3, 1, 28, width=8, noise_dim=6)
    noise = torch.arange(12.0).view(2, 6)
    cond = gen.conditioned_input(noise, torch.tensor([2, 0]))
    assert cond.tolist() == [[0, 0, 1, 3, 4, 5], [1, 0, 0, 9, 10, 11]]
    concat = DiMGenerator(3, 1, 28, width=8, noise_dim=6, conditioning="concat")
    assert concat.conditioned_input(noise, torch.tensor([1, 1])).shape == (2, 9)
    with pytest.raises(GencondError, match="noise size above the number of classes"):
        DiMGenerator(100, 3, 32, noise_dim=100)


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3), (64, 3)])
def test_gan_shapes_and_ranges(size, channels):
    gen, disc = DiMGenerator(10, channels, size, width=8), DiMDiscriminator(10, channels, size, width=8)
    images = gen(torch.randn(4, 100), torch.arange(4))
    assert images.shape == (4, channels, size, size) and images.abs().max() <= 1
    score, logits = disc(images)
    assert score.shape == (4,) and logits.shape == (4, 10)


def test_published_generator_layout():
    gen = DiMGenerator(10, 3, 32)
    kinds = [type(m).__name__ for m in gen.body]
    assert kinds.count("ConvTranspose2d") == 3 and kinds.count("Conv2d") == 5 and kinds[-1] == "Tanh"
    assert gen.fc[0].in_features == 100 and gen.fc[0].out_features == 196 * 4 * 4
    norms = [m for m in DiMDiscriminator(10, 3, 32).modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 8 and norms[0].normalized_shape == (196, 32, 32) and norms[-1].normalized_shape == (196, 4, 4)


def test_critic_scores_each_sample_on_its_own():
    disc = DiMDiscriminator(10, 1, 28, width=8)
    a, b = torch.randn(3, 1, 28, 28), torch.randn(2, 1, 28, 28)
    joint = disc(torch.cat([a, b]))[0]
    torch.testing.assert_close(joint, torch.cat([disc(a)[0], disc(b)[0]]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["logits", "log_softmax", "features", "gradients"])
def test_matching_losses_vanish_on_identical_batches_and_not_otherwise(name):
    torch.manual_seed(0)
    net = create_network("convnet3", 4, 1, 32, width=8)
    labels = torch.tensor([0, 0, 1, 1, 3, 3])
    real = torch.randn(6, 1, 32, 32)
    loss = get_matching(name)
    same = loss.fn(net, real, real.clone(), labels).item()
    different = loss.fn(net, real, torch.randn(6, 1, 32, 32), labels).item()
    assert abs(same) < 1e-3  # gradients: 1 - cosine of float32 rows is zero only up to rounding
    assert different > 100 * abs(same) + 1e-4


def test_feature_matching_is_the_distance_between_class_means():
    class Flat(nn.Module):
        def forward_features(self, x):
            return x.flatten(1)

        def forward_head(self, x, pre_logits=False):
            return x

    real = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]]).view(3, 1, 1, 2)
    fake = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]).view(3, 1, 1, 2)
    labels = torch.tensor([0, 0, 1])
    # class 0 mean (2, 0), class 1 mean (0, 2): squared distances 4 + 4
    assert get_matching("features").fn(Flat(), real, fake, labels).item() == pytest.approx(8.0)
    means, present = class_means(real.flatten(1), labels, 3)
    assert means.tolist() == [[2.0, 0.0], [0.0, 2.0], [0.0, 0.0]] and present.tolist() == [True, True, False]


def test_layerwise_distance_known_values():
    same = [torch.tensor([[1.0, 0.0], [0.0, 1.0]])]
    opposite = [torch.tensor([[-1.0, 0.0], [0.0, 1.0]])]
    assert layerwise_distance(same, same).item() == pytest.approx(0.0, abs=1e-5)
    assert layerwise_distance(same, opposite).item() == pytest.approx(2.0, abs=1e-5)  # rows: 1-(-1) and 1-1
    assert layerwise_distance([torch.ones(3)], [torch.zeros(3)]).item() == 0.0  # biases skipped


def test_unknown_matching_is_a_clear_error():
    with pytest.raises(GencondError, match="unknown matching loss 'logit'"):
        get_matching("logit")


def test_balanced_labels():
    gen = torch.Generator().manual_seed(0)
    assert balanced_labels(64, 10, gen).tolist() == [c for c in range(10) for _ in range(6)]
    many = balanced_labels(8, 100, gen)
    assert len(set(many.tolist())) == 8 and torch.equal(many, many.sort().values)


def test_epoch_batches_split_one_permutation_between_ranks():
    a = epoch_batches(100, 8, rank=0, world=2, seed=1, epoch=3, cap=0)
    b = epoch_batches(100, 8, rank=1, world=2, seed=1, epoch=3, cap=0)
    assert len(a) == len(b) == 6
    seen = torch.cat(a + b).tolist()
    assert len(set(seen)) == len(seen)
    assert [t.tolist() for t in a] == [t.tolist() for t in epoch_batches(100, 8, 0, 2, 1, 3, 0)]
    assert [t.tolist() for t in a] != [t.tolist() for t in epoch_batches(100, 8, 0, 2, 1, 4, 0)]
    assert len(epoch_batches(100, 8, 0, 1, 1, 0, cap=3)) == 3
    with pytest.raises(GencondError, match="fewer than one batch"):
        epoch_batches(10, 8, 0, 2, 0, 0, 0)
