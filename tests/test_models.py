import pytest
import timm
import torch
from torch import nn

from gencond.errors import GencondError
from gencond.models import GENCOND_NETWORKS, ModelPool, create_network, embed

SMALL = [n for n in GENCOND_NETWORKS if not n.startswith(("densenet", "resnet34", "resnet50"))]


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("chans,size", [(1, 28), (3, 32)])
def test_every_network_builds_and_classifies(name, chans, size):
    net = timm.create_model(name, num_classes=7, in_chans=chans, img_size=size)
    x = torch.randn(2, chans, size, size)
    assert net(x).shape == (2, 7)
    assert embed(net, x).shape == (2, net.num_features)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(GENCOND_NETWORKS) - set(SMALL)))
def test_large_networks_build_and_classify(name):
    net = create_network(name, 10, 3, 32)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_convnet3_matches_the_reference_layout():
    net = create_network("convnet3", 10, 3, 32)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
    pools = [m for m in net.modules() if isinstance(m, nn.AvgPool2d)]
    assert [c.out_channels for c in convs] == [128, 128, 128] and all(c.kernel_size == (3, 3) for c in convs)
    assert all(n.num_groups == n.num_channels == 128 and n.affine for n in norms) and len(norms) == 3
    assert len(pools) == 3 and net.num_features == 128 * 4 * 4
    # 3x3 convs with bias, 3 affine norms, linear head of 2048 -> 10
    assert sum(p.numel() for p in net.parameters()) == 3584 + 2 * 147584 + 3 * 256 + 20490


@pytest.mark.parametrize("side", [4, 8, 16])
def test_instance_norm_gives_group_norms_outputs_and_gradients_in_either_layout(side):
    from gencond.models.layers import InstanceNorm

    torch.manual_seed(0)
    reference, norm = nn.GroupNorm(6, 6, affine=True), InstanceNorm(6)
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5), reference.bias.uniform_(-1, 1)
    norm.load_state_dict(reference.state_dict())
    x, upstream = torch.randn(3, 6, side, side) * 3 + 50, torch.randn(3, 6, side, side)  # a mean far from 0
    expected = reference(x.requires_grad_(True))
    (expected * upstream).sum().backward()
    for layout in (torch.contiguous_format, torch.channels_last):
        norm.zero_grad()
        inputs = x.detach().contiguous(memory_format=layout).requires_grad_(True)
        out = norm(inputs)
        (out * upstream).sum().backward()
        assert torch.allclose(out, expected, atol=1e-4)
        assert torch.allclose(inputs.grad, x.grad, atol=1e-4)
        assert torch.allclose(norm.weight.grad, reference.weight.grad, atol=1e-3)
        assert torch.allclose(norm.bias.grad, reference.bias.grad, atol=1e-3)


def test_instance_norm_takes_bf16_channels_last_statistics_in_fp32_and_returns_bf16():
    from gencond.models.layers import InstanceNorm

    torch.manual_seed(0)
    norm = InstanceNorm(6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5), norm.bias.uniform_(-1, 1)
    # bf16 resolves 0.25 at 50: statistics taken in bf16 would be off by up to ~0.04 here
    x = (torch.randn(3, 6, 8, 8) * 3 + 50).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    assert norm.takes_the_view(x)
    out = norm(x)
    expected = nn.functional.group_norm(x.float(), 6, norm.weight, norm.bias, norm.eps)  # the same values, fp32
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last)
    assert (out.float() - expected).abs().max() <= expected.abs().max() * 2**-8  # one bf16 rounding of the output


def test_instance_norm_leaves_32x32_and_larger_maps_to_group_norms_kernel():
    from gencond.models.layers import InstanceNorm

    norm, x = InstanceNorm(4), torch.randn(2, 4, 32, 32).contiguous(memory_format=torch.channels_last)
    assert torch.equal(norm(x), nn.functional.group_norm(x, 4, norm.weight, norm.bias, norm.eps))


def test_mnist_sized_inputs_are_padded_to_32():
    net = create_network("convnet3", 10, 1, 28)
    assert net.num_features == 2048
    assert [m for m in net.modules() if isinstance(m, nn.Conv2d)][0].padding == (3, 3)


def test_batch_norm_variant_uses_batch_norm():
    net = create_network("convnet3_bn", 10, 3, 32)
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert not any(isinstance(m, nn.GroupNorm) for m in net.modules())


def test_resnet_ap_downsamples_by_average_pooling():
    net = create_network("resnet10_ap", 10, 3, 32)
    assert all(c.stride == (1, 1) for c in net.modules() if isinstance(c, nn.Conv2d))
    assert any(isinstance(m, nn.AvgPool2d) for m in net.modules())
    strided = create_network("resnet10_cifar", 10, 3, 32)
    assert any(c.stride == (2, 2) for c in strided.modules() if isinstance(c, nn.Conv2d))


def test_imagenet_stem_quarters_the_input_like_the_dim_pool_resnets():
    net = create_network("resnet10_imagenet", 10, 1, 28)
    first = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    assert first.kernel_size == (7, 7) and first.stride == (2, 2)
    assert net.stem(torch.randn(2, 1, 28, 28)).shape == (2, 64, 7, 7)
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    cifar = create_network("resnet10_cifar", 10, 1, 28)
    assert cifar.stem(torch.randn(2, 1, 28, 28)).shape == (2, 64, 28, 28)


def test_other_timm_models_are_accepted_as_they_are():
    net = create_network("resnet10t", 10, 3, 32)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(GencondError, match="unknown architecture 'convnet9'"):
        create_network("convnet9", 10, 3, 32)
    with pytest.raises(GencondError, match="unknown architecture"):
        ModelPool(["convnet3", "nope"], 10, 3, 32)


def test_pretrained_weights_are_refused():
    with pytest.raises(GencondError, match="no pretrained weights"):
        timm.create_model("convnet3", pretrained=True)


def test_model_pool_is_seeded():
    names = ["convnet3", "mlp3", "resnet10_cifar"]
    a, b = ModelPool(names, 10, 3, 32, seed=4), ModelPool(names, 10, 3, 32, seed=4)
    draws_a = [a.draw() for _ in range(6)]
    draws_b = [b.draw() for _ in range(6)]
    assert [n for n, _ in draws_a] == [n for n, _ in draws_b]
    assert len({n for n, _ in draws_a}) > 1
    for (_, net_a), (_, net_b) in zip(draws_a, draws_b):
        for pa, pb in zip(net_a.parameters(), net_b.parameters()):
            assert torch.equal(pa, pb)
    # successive draws are freshly initialised, not copies
    first, second = ModelPool(["convnet3"], 10, 3, 32).draw()[1], None
    second = ModelPool(["convnet3"], 10, 3, 32, seed=1).draw()[1]
    assert not torch.equal(next(first.parameters()), next(second.parameters()))
