"""DC-BENCH augmentation policies: known answers on hand-made images, per-image draws,
reproducibility, and their use in evaluation training."""

import pytest
import torch
from torchvision.transforms import functional as TF

from gencond.augment.policies import POLICIES, PolicyAugment
from gencond.engine.networks import IndexedData, TrainConfig, train_network
from gencond.errors import GencondError
from gencond.models import create_network

MEAN, STD = (0.5,), (0.25,)


def normalized(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels.float() / 255 - 0.5) / 0.25


def test_pixel_round_trip_is_exact_on_8_bit_images():
    pixels = torch.randint(0, 256, (4, 1, 12, 12), dtype=torch.uint8)
    out = PolicyAugment("x", MEAN, STD, 12, transform=lambda image: image)(normalized(pixels))
    assert torch.allclose(out, normalized(pixels), atol=1e-6)


def test_injected_flip_flips_every_image():
    pixels = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    out = PolicyAugment("x", MEAN, STD, 8, transform=TF.hflip)(normalized(pixels))
    assert torch.allclose(out, normalized(pixels.flip(-1)), atol=1e-6)


def test_imagenet_policy_keeps_a_black_image_black():
    # zero padding, flips and every colour jitter of a black image are black again
    black = torch.zeros(5, 3, 16, 16, dtype=torch.uint8)
    aug = PolicyAugment("imagenet", (0.5,) * 3, (0.25,) * 3, 16, torch.Generator().manual_seed(0))
    assert torch.allclose(aug(normalized(black)), normalized(black), atol=1e-6)


def test_imagenet_policy_crops_with_zero_padding():
    # a white image: the random crop shifts in black borders, never more than 4 pixels wide
    white = torch.full((32, 1, 16, 16), 255, dtype=torch.uint8)
    aug = PolicyAugment("imagenet", MEAN, STD, 16, torch.Generator().manual_seed(1))
    out = aug(normalized(white)) * 0.25 + 0.5
    black_rows = (out.amax(dim=(1, 3)) < 1e-6).sum(1)
    black_cols = (out.amax(dim=(1, 2)) < 1e-6).sum(1)
    assert int(black_rows.max()) <= 4 and int(black_cols.max()) <= 4
    assert int((black_rows + black_cols).gt(0).sum()) > 0  # some image was shifted


@pytest.mark.parametrize("name", POLICIES)
def test_policies_draw_per_image_and_reproducibly(name):
    image = torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8)
    batch = normalized(image.expand(16, -1, -1, -1))
    out = PolicyAugment(name, (0.5,) * 3, (0.25,) * 3, 16, torch.Generator().manual_seed(0))(batch)
    again = PolicyAugment(name, (0.5,) * 3, (0.25,) * 3, 16, torch.Generator().manual_seed(0))(batch)
    assert out.shape == batch.shape and torch.equal(out, again)
    distinct = {tuple(o.flatten().tolist()) for o in out}
    assert len(distinct) > 1  # identical inputs, different draws
    assert float(out.min()) >= -2.0 - 1e-5 and float(out.max()) <= 2.0 + 1e-5  # [0, 1] pixels, normalized


def test_unknown_policy_fails():
    with pytest.raises(ValueError, match="unknown augmentation policy"):
        PolicyAugment("mixup", MEAN, STD, 8)


def test_evaluation_trains_with_a_policy_and_needs_the_normalization(digits):
    x, y = digits.train.batch(torch.arange(40))
    cfg = TrainConfig(epochs=1, augment="randaugment")
    net = create_network("convnet3", 10, 1, 32, width=8)
    with pytest.raises(GencondError, match="normalization"):
        train_network(net, IndexedData.from_tensors(x, y), cfg, torch.device("cpu"))
    before = [p.detach().clone() for p in net.parameters()]
    train_network(net, IndexedData.from_tensors(x, y), cfg, torch.device("cpu"), info=digits.info)
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
