import math

import pytest
import torch

from gencond.augment import DSA, OPERATIONS, identity_params
from gencond.augment.dsa import (
    _apply_color,
    _apply_crop,
    _apply_cutout,
    _apply_flip,
    _apply_rotate,
    _apply_scale,
)
from gencond.errors import GencondError


def batch(n=4, c=3, size=8, seed=0):
    return torch.randn(n, c, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("op", list(OPERATIONS))
def test_identity_parameters_leave_batch_unchanged(op):
    x = batch()
    out = OPERATIONS[op][1](x, identity_params(op, n=1, size=8))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("op", list(OPERATIONS))
@pytest.mark.parametrize("per_image", [True, False])
def test_gradients_reach_the_input(op, per_image):
    x = batch().requires_grad_()
    gen = torch.Generator().manual_seed(1)
    params = OPERATIONS[op][0](4 if per_image else 1, 8, DSA().params, "cpu", gen)
    out = OPERATIONS[op][1](x, params)
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", ["dsa", "idc"])
def test_whole_augmentation_is_differentiable(mode):
    x = batch().requires_grad_()
    DSA(mode=mode, generator=torch.Generator().manual_seed(0))(x).sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("mode", ["dsa", "idc"])
def test_siamese_batches_get_identical_transforms(mode):
    dsa = DSA(mode=mode, generator=torch.Generator().manual_seed(3))
    for _ in range(20):
        x = batch(seed=5)
        a, b = dsa.siamese(x, x.clone())
        torch.testing.assert_close(a, b)
        # one parameter set for the whole batch: images that were equal stay equal
        same = batch(n=1).expand(3, -1, -1, -1)
        (c,) = dsa.siamese(same)
        torch.testing.assert_close(c[0], c[1])
        torch.testing.assert_close(c[0], c[2])


def test_per_image_mode_draws_different_parameters():
    dsa = DSA("scale", generator=torch.Generator().manual_seed(0))
    out = dsa(batch(n=1, size=16).expand(6, -1, -1, -1))
    assert not torch.allclose(out[0], out[1])


def test_flip_mirrors_columns():
    x = torch.arange(4.0).view(1, 1, 2, 2)
    out = _apply_flip(x, {"flip": torch.tensor([True])})
    assert out.flatten().tolist() == [1.0, 0.0, 3.0, 2.0]


def test_crop_translates_by_whole_pixels_with_zero_fill():
    x = torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    out = _apply_crop(x, {"dy": torch.tensor([1]), "dx": torch.tensor([-1])})
    # output[r, c] = input[r + 1, c - 1], zero outside
    assert out[0, 0].tolist() == [[0.0, 4.0, 5.0], [0.0, 7.0, 8.0], [0.0, 0.0, 0.0]]


def test_cutout_zeroes_a_centred_square():
    x = torch.ones(1, 2, 6, 6)
    out = _apply_cutout(x, {"side": torch.tensor([2]), "cy": torch.tensor([3]), "cx": torch.tensor([1])})
    expected = torch.ones(6, 6)
    expected[2:4, 0:2] = 0
    assert torch.equal(out[0, 0], expected) and torch.equal(out[0, 1], expected)


def test_cutout_hole_is_half_the_side_by_default():
    gen = torch.Generator().manual_seed(0)
    params = OPERATIONS["cutout"][0](64, 32, DSA().params, "cpu", gen)
    out = _apply_cutout(torch.ones(64, 1, 32, 32), params)
    holes = (out == 0).sum(dim=(1, 2, 3))
    assert holes.max() == 16 * 16  # fully inside: 16x16; near an edge: clipped
    assert (holes > 0).all()


def test_color_known_values():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2).repeat(1, 3, 1, 1)
    x[:, 1] += 1.0
    # brightness adds; saturation 0 collapses every pixel to its channel mean; contrast 1 keeps.
    p = {"brightness": torch.tensor([0.25]), "saturation": torch.tensor([0.0]), "contrast": torch.tensor([1.0])}
    out = _apply_color(x, p)
    channel_mean = (x + 0.25).mean(dim=1, keepdim=True)
    torch.testing.assert_close(out, channel_mean.expand_as(x))
    # contrast 0.5 halves the deviation from the image mean
    p = {"brightness": torch.tensor([0.0]), "saturation": torch.tensor([1.0]), "contrast": torch.tensor([0.5])}
    out = _apply_color(x, p)
    torch.testing.assert_close(out, (x - x.mean()) * 0.5 + x.mean())


def test_rotate_positive_quarter_turn_is_anticlockwise_and_exact():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    out = _apply_rotate(x, {"angle": torch.tensor([math.pi / 2])})
    torch.testing.assert_close(out, torch.rot90(x, k=1, dims=(2, 3)), atol=1e-4, rtol=0)


def test_scale_two_zooms_out_by_half():
    x = torch.ones(1, 1, 8, 8)
    out = _apply_scale(x, {"sx": torch.tensor([2.0]), "sy": torch.tensor([2.0])})
    # sampling twice as far: the image occupies the central half, zeros outside
    assert out[0, 0, 0, 0] == 0 and out[0, 0, 4, 4] == 1


def test_dsa_mode_applies_one_operation_per_call():
    dsa = DSA(mode="dsa", generator=torch.Generator().manual_seed(0))
    seen = set()
    for _ in range(60):
        steps = dsa.draw(4, 8).steps
        assert len(steps) == 1
        seen.add(steps[0][0])
    assert seen == set(OPERATIONS)


def test_idc_mode_always_applies_flip_color_cutout_plus_one():
    dsa = DSA(mode="idc", generator=torch.Generator().manual_seed(0))
    for _ in range(20):
        ops = [op for op, _ in dsa.draw(4, 8).steps]
        assert ops[:2] == ["flip", "color"] and ops[-1] == "cutout"
        assert len(ops) == 4 and ops[2] in {"crop", "scale", "rotate"}
    assert [op for op, _ in DSA("color_crop_cutout", mode="idc").draw(1, 8).steps] == ["color", "crop", "cutout"]


def test_seeded_generator_reproduces_draws():
    x = batch()
    a = DSA(generator=torch.Generator().manual_seed(7))(x)
    b = DSA(generator=torch.Generator().manual_seed(7))(x)
    torch.testing.assert_close(a, b)


def test_none_strategy_is_identity():
    x = batch()
    assert torch.equal(DSA("none")(x), x)


def test_unknown_operation_or_mode_is_a_clear_error():
    with pytest.raises(GencondError, match="unknown DSA operation"):
        DSA("color_warp")
    with pytest.raises(GencondError, match="unknown DSA mode"):
        DSA(mode="stacked")
