"""Pixel baselines (DM, DC/DSA, IDC) and coreset selection: known-answer cases."""

import pytest
import torch
import torch.nn.functional as F

from gencond.artifacts import CondensedSet
from gencond.augment import DSA, AugmentDraw
from gencond.data import DatasetInfo, TensorImageSet
from gencond.data.formation import decode, decode_labels, encode
from gencond.data.selection import (
    herding_positions,
    kcenter_positions,
    kmeans,
    kmeans_positions,
)
from gencond.errors import GencondError
from gencond.losses.matching import layerwise_distance
from gencond.methods.coresets import SelectionConfig, check_ipc, herding
from gencond.methods.dm import DMConfig, distribution_matching_loss, real_embeddings
from gencond.methods.dsa import (
    class_gradient_distance,
    default_loops,
    freeze_batch_norm,
)
from gencond.methods.idc import gradient_distance, matched_parameters
from gencond.models import create_network, embed

# --- DM ---


def test_dm_loss_is_zero_when_the_synthetic_set_equals_the_real_batch():
    features = torch.randn(12, 5)
    labels = torch.arange(3).repeat_interleave(4)
    assert distribution_matching_loss(features, labels, features.clone(), labels, 3) == 0


def test_dm_loss_hand_made_case():
    # class 0: real mean (1, 1), synthetic (0, 0) -> 2; class 1: real mean (2, 0), synthetic (2, 3) -> 9
    real = torch.tensor([[0.0, 0.0], [2.0, 2.0], [1.0, 0.0], [3.0, 0.0]])
    real_labels = torch.tensor([0, 0, 1, 1])
    syn = torch.tensor([[0.0, 0.0], [2.0, 3.0]])
    syn_labels = torch.tensor([0, 1])
    assert distribution_matching_loss(real, real_labels, syn, syn_labels, 2).item() == pytest.approx(11.0)


def test_dm_loss_through_a_network_and_class_wise_augmentation_is_zero_for_equal_sets():
    torch.manual_seed(0)
    net = create_network("convnet3", 3, 1, 28).requires_grad_(False)
    images = torch.randn(6, 1, 28, 28)
    labels = torch.arange(3).repeat_interleave(2)
    draw = DSA("color_crop_cutout_scale_rotate", generator=torch.Generator().manual_seed(1)).draw_groups(3, 28)
    real = embed(net, draw(images, labels))
    syn = embed(net, draw(images.clone().requires_grad_(True), labels))
    assert distribution_matching_loss(real, labels, syn, labels, 3).item() == pytest.approx(0.0, abs=1e-6)


def test_dm_real_embeddings_in_bf16_are_fp32_class_means_within_bf16_rounding():
    torch.manual_seed(0)
    net = create_network("convnet3", 2, 1, 28).requires_grad_(False)
    images = torch.randn(64, 1, 28, 28)
    exact = real_embeddings(net, images, chunk=16)
    assert torch.equal(exact, embed(net, images))  # chunking changes nothing
    rounded = real_embeddings(net, images, chunk=16, precision="bf16")
    assert rounded.dtype == torch.float32 and not torch.equal(rounded, exact)  # it did run in bf16
    means, rounded_means = exact.view(2, 32, -1).mean(1), rounded.view(2, 32, -1).mean(1)
    assert ((rounded_means - means).norm() / means.norm()).item() < 1e-2  # bf16 keeps 8 bits: 2^-8 = 0.4 %


def test_dm_config_rejects_an_unknown_mixed_precision():
    with pytest.raises(GencondError, match="mixed_precision"):
        DMConfig(mixed_precision="fp32").check()


def test_dm_in_bf16_on_a_cpu_without_native_bf16_says_so_in_one_line(monkeypatch):
    import gencond.runtime
    from gencond.methods.dm import distribution_matching

    monkeypatch.setattr(gencond.runtime, "cpu_description", lambda: {"cpu_flags": ["avx2", "avx512f"]})
    lines = []
    cfg = DMConfig(iterations=1, batch_real=4, mixed_precision="bf16", log_every=0)
    distribution_matching(cfg, cfg.load_splits(), lines.append)
    (warning,) = [line for line in lines if line.startswith("warning")]
    assert "mixed_precision bf16" in warning and "mixed_precision: no or auto" in warning


def test_dm_records_the_precision_its_real_forward_ran_in(monkeypatch):
    import gencond.runtime
    from gencond.methods.dm import distribution_matching

    monkeypatch.setattr(gencond.runtime, "cpu_description", lambda: {"cpu_flags": ["avx2", "avx512f"]})
    for setting, ran in (("no", "fp32"), ("auto", "fp32"), ("bf16", "bf16")):
        cfg = DMConfig(iterations=1, batch_real=4, mixed_precision=setting, log_every=0)
        result = distribution_matching(cfg, cfg.load_splits(), lambda line: None)
        assert (result.config["mixed_precision"], result.config["real_forward"]) == (setting, ran)


def test_dm_mixed_precision_auto_is_bf16_only_on_a_cpu_with_native_bf16(monkeypatch):
    import gencond.runtime
    from gencond.methods.dm import real_forward_precision

    cpu = torch.device("cpu")
    for flags, native in ((["avx512f", "avx512_bf16"], True), (["avx512f"], False), (["avx2", "amx_bf16"], True)):
        monkeypatch.setattr(gencond.runtime, "cpu_description", lambda flags=flags: {"cpu_flags": flags})
        assert real_forward_precision(DMConfig(mixed_precision="auto"), cpu) == ("bf16" if native else "no")
        assert real_forward_precision(DMConfig(mixed_precision="bf16"), cpu) == "bf16"
        assert real_forward_precision(DMConfig(), cpu) == "no"


# --- class-wise siamese augmentation ---


def test_group_draw_applies_each_groups_own_draw_to_its_images():
    dsa = DSA("color_crop_cutout_flip_scale_rotate", generator=torch.Generator().manual_seed(0))
    x = torch.randn(8, 3, 16, 16)
    groups = torch.tensor([2, 0, 1, 2, 0, 3, 1, 3])
    draw = dsa.draw_groups(4, 16)
    out = draw(x, groups)
    for g in range(4):
        mine = groups == g
        steps = [(op, {k: v[g:g + 1] for k, v in draw.params[op].items()}) for op in draw.plans[g]]
        assert torch.allclose(out[mine], AugmentDraw(steps)(x[mine]), atol=1e-6)
    # the same image in two batches, same group -> the same output (siamese)
    again = draw(x[groups == 1][:1], torch.tensor([1]))
    assert torch.allclose(again, out[groups == 1][:1], atol=1e-6)


def test_group_draw_passes_gradients_to_every_image():
    x = torch.randn(6, 1, 8, 8, requires_grad=True)
    DSA("crop_scale", generator=torch.Generator().manual_seed(0)).draw_groups(3, 8)(x, torch.tensor([0, 1, 2, 0, 1, 2])).sum().backward()
    assert x.grad is not None and x.grad.abs().sum(dim=(1, 2, 3)).gt(0).all()


# --- DC / DSA ---


def test_class_gradient_distance_sums_per_class_distances_and_is_zero_for_equal_sets():
    torch.manual_seed(0)
    net = create_network("convnet3", 3, 1, 28)
    real = torch.randn(9, 1, 28, 28)
    labels = torch.arange(3).repeat_interleave(3)
    syn = torch.randn(3, 1, 28, 28, requires_grad=True)
    syn_labels = torch.arange(3)
    total = class_gradient_distance(net, real, labels, syn, syn_labels, 3)
    params = list(net.parameters())
    expected = 0.0
    for c in range(3):
        g_real = torch.autograd.grad(F.cross_entropy(net(real[3 * c:3 * c + 3]), labels[3 * c:3 * c + 3]), params)
        g_syn = torch.autograd.grad(F.cross_entropy(net(syn[c:c + 1]), syn_labels[c:c + 1]), params)
        expected += layerwise_distance(list(g_real), list(g_syn)).item()
    assert total.item() == pytest.approx(expected, rel=1e-5)
    (grad_syn,) = torch.autograd.grad(total, syn)
    assert grad_syn.abs().sum(dim=(1, 2, 3)).gt(0).all()
    same = class_gradient_distance(net, real, labels, real.clone().requires_grad_(True), labels, 3)
    assert same.item() < 0.01 * total.item()  # not exactly 0: rows of near-zero gradient meet the 1e-6 of the cosine


def test_layerwise_distance_hand_made_case():
    # rows: parallel (cos 1 -> 0), orthogonal (cos 0 -> 1), opposite (cos -1 -> 2)
    real = [torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])]
    syn = [torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, -1.0]])]
    assert layerwise_distance(real, syn).item() == pytest.approx(3.0, abs=1e-5)


def test_official_loops():
    assert default_loops(1) == (1, 1) and default_loops(10) == (10, 50) and default_loops(50) == (50, 10)
    assert default_loops(100) == (10, 10)  # DC-BENCH above 50
    assert default_loops(12) == (10, 50)


def test_batch_norm_networks_match_with_frozen_statistics():
    net = create_network("convnet3_bn", 2, 1, 28)
    freeze_batch_norm(net, torch.randn(8, 1, 28, 28))
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    assert all(m.num_batches_tracked.item() == 1 for m in norms)
    before = [m.running_mean.clone() for m in norms]
    x, labels = torch.randn(4, 1, 28, 28), torch.tensor([0, 0, 1, 1])
    class_gradient_distance(net, x, labels, x.clone().requires_grad_(True), labels, 2)
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, norms))  # matching leaves the statistics alone


# --- IDC ---


def test_decode_maps_f_by_f_parts_to_full_size_images_in_block_order():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, :2, :2], x[0, 0, :2, 2:], x[0, 0, 2:, :2], x[0, 0, 2:, 2:] = 1, 2, 3, 4
    out = decode(x, 2)
    assert out.shape == (4, 1, 4, 4)
    assert torch.equal(out, torch.tensor([1.0, 2, 3, 4]).view(4, 1, 1, 1).expand(4, 1, 4, 4))
    assert torch.equal(decode_labels(torch.tensor([7, 8]), 2), torch.tensor([7, 8] * 4))


def test_decode_is_block_major_over_several_images_and_inverts_encode():
    images = torch.arange(8.0).view(8, 1, 1, 1).expand(8, 1, 28, 28).contiguous()  # constant images 0..7
    stored = encode(images, 2)
    assert stored.shape == (2, 1, 28, 28)
    assert torch.equal(decode(stored, 2), images)  # decoded k*N + m = block k of stored m = image k*N + m
    assert torch.equal(decode(images, 1), images)


def test_decode_pads_a_side_not_divisible_by_f():
    out = decode(torch.ones(1, 1, 5, 5), 2, pad_value=0.0)
    assert out.shape == (4, 1, 5, 5)
    assert out[0].min() > 0.5 and out[3].mean() < out[0].mean()  # the last block holds padding


def test_condensed_set_with_a_formation_factor_round_trips_and_decodes(tmp_path):
    info = DatasetInfo("toy", 1, 8, ("a", "b"), (0.5,), (0.5,))
    condensed = CondensedSet(torch.randn(2, 1, 8, 8), torch.tensor([0, 1]), info, method="idc", factor=2)
    for suffix in (".safetensors", ".pt", ".npz"):
        loaded = CondensedSet.load(condensed.save(tmp_path / f"s{suffix}"))
        images, targets = loaded.decoded()
        assert loaded.factor == 2 and images.shape == (8, 1, 8, 8) and targets.tolist() == [0, 1] * 4
        assert loaded.images_per_class().tolist() == [1, 1]
    with pytest.raises(GencondError, match="factor"):
        CondensedSet(torch.randn(2, 1, 8, 8), torch.tensor([0, 1]), info, factor=0).save(tmp_path / "bad.safetensors")


def test_idc_matches_conv_weights_only_by_default_and_distance_is_zero_for_equal_batches():
    torch.manual_seed(0)
    net = create_network("convnet3", 2, 1, 28)
    params = matched_parameters(net, match_bias=False, match_fc=False)
    assert params and all(p.dim() == 4 for p in params)
    assert len(matched_parameters(net, True, True)) == len(list(net.parameters()))
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 0, 1, 1])
    other = torch.randn(4, 1, 28, 28, requires_grad=True)
    for distance in ("mse", "l1"):
        same = gradient_distance(net, params, x, y, x.clone().requires_grad_(True), y, distance).item()
        different = gradient_distance(net, params, x, y, other, y, distance).item()
        assert same < 1e-6 * different  # zero up to float rounding (summed over ~300k weights)


# --- coresets ---


def test_herding_picks_the_point_nearest_the_mean_first_then_follows_the_greedy_rule():
    features = torch.tensor([[0.0], [1.0], [2.0], [10.0]])  # mean 3.25
    assert herding_positions(features, 3).tolist() == [2, 1, 3]


def test_kcenter_adds_the_point_farthest_from_the_chosen_set():
    features = torch.tensor([[0.0], [1.0], [5.0], [9.0], [9.5]])
    picks = kcenter_positions(features, 3, torch.Generator().manual_seed(0)).tolist()
    assert len(set(picks)) == 3
    for t in range(1, 3):
        chosen = features[picks[:t]]
        distance = torch.cdist(features, chosen).min(1).values
        assert distance[picks[t]] == distance.max()


def test_kmeans_finds_separated_clusters_and_returns_one_real_point_per_cluster():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(20, 2, generator=generator) * 0.1
    b = torch.randn(20, 2, generator=generator) * 0.1 + 10
    features = torch.cat([a, b])
    centres = kmeans(features, 2, torch.Generator().manual_seed(1))
    assert sorted(centres.sum(1).round().tolist()) == [0.0, 20.0]
    picks = kmeans_positions(features, 2, torch.Generator().manual_seed(1))
    assert sorted((picks >= 20).tolist()) == [False, True]


def _toy_images(per_class=(6, 5)) -> TensorImageSet:
    info = DatasetInfo("toy", 1, 8, tuple(str(c) for c in range(len(per_class))), (0.5,), (0.5,))
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])
    pixels = torch.randint(0, 256, (len(labels), 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return TensorImageSet(info, pixels, labels)


def test_selection_returns_ipc_images_of_every_class_and_rejects_too_large_ipc():
    images = _toy_images()
    cfg = SelectionConfig(embed_net="mlp3", embed_epochs=0)
    picks = herding(images, 2, 0, cfg)
    assert images.labels[picks].tolist() == [0, 0, 1, 1] and len(set(picks.tolist())) == 4
    with pytest.raises(GencondError, match="IPC 6 is larger than class 1"):
        check_ipc(images, 6)
