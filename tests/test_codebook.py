"""The codebook generator (Zhang et al. 2023): known answers for its losses, the
generator and its latents, training end to end at a tiny size, resume, serving, and the
one-line errors."""

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from gencond.cli import main
from gencond.data.sampler import random_subset
from gencond.engine import RealBatchConfig
from gencond.errors import GencondError
from gencond.losses.adversarial import (
    feature_discriminator_loss,
    feature_generator_loss,
)
from gencond.losses.codebook import (
    feature_matching_loss,
    inter_class_loss,
    intra_class_loss,
)
from gencond.methods import coresets
from gencond.methods.codebook import (
    CodebookConfig,
    CodebookTrainer,
    class_statistics,
    code_groups,
    feature_net_config,
    initialise_from,
    mean_parts,
    prefix_sizes,
    standardised,
    train_codebook,
)
from gencond.methods.dim import DiMConfig, train_dim
from gencond.models import load_generator
from gencond.models.codebook import CodebookGenerator, FeatureDiscriminator
from gencond.serve import GeneratorDataset, sample_set
from gencond.training.validation import draw_fixed_set

ROOT = Path(__file__).resolve().parents[1]
TINY = CodebookConfig(dataset="digits", epochs=2, steps_per_epoch=2, codebook_size=3, code_dim=8, embed_dim=8,
                      width=8, feature_net_epochs=0, class_feature_images=16, association_size=4,
                      phi_training=RealBatchConfig(batches=1, batch_size=16, dsa_strategy="none"),
                      phi_reinit_every=3, nested=True, seed=1)


# --- losses: hand-made cases ---


def test_inter_class_loss_is_zero_beyond_the_margin_and_positive_inside_it():
    far = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # unit class means sqrt(2) apart
    assert inter_class_loss(far, margin=1.0).item() == 0.0
    assert inter_class_loss(far, margin=2.0).item() == pytest.approx(2.0 - math.sqrt(2), abs=1e-5)
    same = torch.tensor([[[1.0, 0.0]], [[2.0, 0.0]]])  # both normalise to (1, 0)
    assert inter_class_loss(same, margin=0.5).item() == pytest.approx(0.5, abs=1e-5)
    assert inter_class_loss(far[:1], margin=1.0).item() == 0.0  # one class: no pairs


def test_inter_class_loss_has_finite_gradients_when_class_means_coincide():
    features = torch.ones(2, 2, 3, requires_grad=True)
    inter_class_loss(features, margin=1.0).backward()
    assert torch.isfinite(features.grad).all()


def test_intra_class_loss_known_value_and_falls_when_samples_spread():
    centre = torch.tensor([[1.0, 0.0]])
    together = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])  # both on the centre
    # each sample: positive 1/tau, one negative 1/tau -> -log(1/2)
    assert intra_class_loss(together, centre, temperature=0.5).item() == pytest.approx(math.log(2), abs=1e-5)
    s = math.sqrt(0.5)
    spread = torch.tensor([[[s, s], [s, -s]]])  # 45 degrees off the centre, orthogonal to each other
    spread_value = intra_class_loss(spread, centre, temperature=0.5).item()
    # positive cos 45 / 0.5, negative 0: -log(e^(s/0.5) / (e^(s/0.5) + 1))
    assert spread_value == pytest.approx(math.log1p(math.exp(-s / 0.5)), abs=1e-5)
    assert spread_value < math.log(2)
    single = torch.tensor([[[0.3, 0.4]]])
    assert intra_class_loss(single, centre, temperature=0.1).item() == pytest.approx(0.0, abs=1e-6)


def test_feature_matching_is_the_mse_to_the_association_mean_summed_over_layers():
    layer1 = torch.tensor([[[1.0, 3.0], [3.0, 3.0]]])  # 1 class, 2 samples, 2 features
    mean1 = torch.tensor([[1.0, 1.0]])
    layer2 = torch.zeros(1, 2, 1)
    mean2 = torch.tensor([[2.0]])
    # layer 1: sample means of squared error (0+4)/2 = 2 and (4+4)/2 = 4 -> 3; layer 2: 4
    assert feature_matching_loss([layer1, layer2], [mean1, mean2]).item() == pytest.approx(7.0)
    assert feature_matching_loss([mean1.unsqueeze(1)], [mean1]).item() == 0.0


def test_feature_gan_losses_known_values():
    zero = torch.zeros(2)
    uniform = torch.zeros(2, 4)
    g = feature_generator_loss(zero, uniform, torch.tensor([0, 3]))
    assert g["adv"].item() == pytest.approx(math.log(2)) and g["cls"].item() == pytest.approx(math.log(4))
    d = feature_discriminator_loss(zero, zero, uniform, uniform, torch.tensor([1, 2]), torch.tensor([0, 0]))
    assert d["d_adv"].item() == pytest.approx(2 * math.log(2)) and d["d_cls"].item() == pytest.approx(2 * math.log(4))
    sure = feature_discriminator_loss(torch.full((2,), 20.0), torch.full((2,), -20.0), uniform, uniform,
                                      torch.tensor([1, 2]), torch.tensor([0, 0]))
    assert sure["d_adv"].item() < 1e-6
    soft = feature_generator_loss(zero, uniform, torch.full((2, 4), 0.25))
    assert soft["cls"].item() == pytest.approx(math.log(4))


# --- generator ---


def test_codebook_latents_are_the_codes_then_codes_with_noise():
    gen = CodebookGenerator(4, 1, 28, codebook_size=3, code_dim=5, feature_dim=6, embed_dim=2, width=8)
    rng = torch.Generator().manual_seed(0)
    slots = torch.tensor([0, 1, 2, 0, 3, 5])
    latents = gen.latents(slots, 6, rng)
    torch.testing.assert_close(latents[:4], gen.codebook.detach()[[0, 1, 2, 0]])
    beyond = latents[4:] - gen.codebook.detach()[[0, 2]]
    assert (beyond.abs() > 0).all()
    assert beyond.abs().max() < 5 * gen.codebook.detach().std(0).max()
    assert gen.latents(None, 7, rng).shape == (7, 5)


def test_codebook_generator_takes_slots_or_codes_and_records_its_config():
    gen = CodebookGenerator(4, 3, 32, codebook_size=3, code_dim=5, feature_dim=6, embed_dim=2, width=8).eval()
    labels = torch.tensor([0, 3, 1])
    by_slot = gen(torch.tensor([0, 1, 2]), labels)
    by_code = gen(gen.codebook.detach(), labels)
    torch.testing.assert_close(by_slot, by_code)
    assert by_slot.shape == (3, 3, 32, 32) and by_slot.abs().max() <= 1
    config = gen.config
    assert config["codebook_size"] == 3 and config["backbone"] == "blocks" and config["num_classes"] == 4
    blocks = [m for m in gen.body if isinstance(m, torch.nn.Upsample)]
    assert len(blocks) == 3  # three blocks at 32x32 (paper)
    assert len([m for m in CodebookGenerator(4, 3, 64).body if isinstance(m, torch.nn.Upsample)]) == 4


def test_feature_discriminator_shapes():
    disc = FeatureDiscriminator(10, 6, 4)
    logit, classes = disc(torch.randn(5, 10), torch.randn(5, 6))
    assert logit.shape == (5,) and classes.shape == (5, 4)


# --- training end to end ---


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("codebook")
    return train_codebook(replace(TINY, output_dir=str(out))), out


@pytest.mark.slow
def test_training_writes_the_artifact_and_serves_any_inpc(trained):
    folder, out = trained
    assert (out / "state").is_dir() and (out / "samples" / "epoch_0002.png").is_file()
    assert (out / "log.jsonl").read_text().count("\n") == 2
    generator = load_generator(folder)
    assert generator.architecture == "codebook_generator"
    net = generator
    assert net.class_features.abs().sum() > 0  # the class features travel with the artifact
    small = sample_set(generator, 2, seed=0)
    again = sample_set(generator, 2, seed=5)
    torch.testing.assert_close(small.images, again.images)  # the first codes: the same set for any seed
    large = sample_set(generator, 5, seed=0)
    assert len(large) == 5 * 10
    torch.testing.assert_close(large.images.view(10, 5, -1)[:, :2], small.images.view(10, 2, -1))
    fixed = GeneratorDataset(generator, inpc=2, seed=0)
    torch.testing.assert_close(torch.stack([fixed[i][0] for i in range(len(fixed))]), small.images)
    fresh = GeneratorDataset(generator, inpc=2, seed=0, fresh=True)
    first = fresh[0][0].clone()
    fresh.set_epoch(1)
    assert not torch.equal(first, fresh[0][0])


@pytest.mark.slow
def test_resume_continues_exactly(trained, tmp_path):
    folder, _ = trained
    out = tmp_path / "resumed"
    train_codebook(replace(TINY, output_dir=str(out), epochs=1))
    (out / "generator").rename(out / "after_one")
    resumed = train_codebook(replace(TINY, output_dir=str(out)), resume=True)
    a, b = load_generator(folder).state_dict(), load_generator(resumed).state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


@pytest.mark.slow
def test_every_loss_switches_off_and_the_other_class_embeddings_train(tmp_path):
    for overrides in ({"gan_weight": 0.0, "intra_weight": 0.0, "inter_weight": 0.0, "class_embedding": "one_hot"},
                      {"feature_weight": 0.0, "class_embedding": "online_feature", "soft_labels": True}):
        out = tmp_path / overrides["class_embedding"]
        train_codebook(replace(TINY, output_dir=str(out), epochs=1, steps_per_epoch=1, **overrides))
        record = (out / "log.jsonl").read_text()
        for name, key in (("gan_weight", "g_adv"), ("feature_weight", "feature"), ("intra_weight", "intra")):
            assert (f'"{key}"' in record) == (overrides.get(name, 1.0) > 0)


@pytest.mark.slow
def test_init_from_a_dim_generator_when_it_fits_and_a_clear_error_when_not(tmp_path):
    dim_cfg = DiMConfig(dataset="digits", width=8, batch_size=16, gan_epochs=1, match_epochs=0, steps_per_epoch=1,
                        output_dir=str(tmp_path / "dim"), sample_every=0)
    dim_folder = train_dim(dim_cfg)
    info = load_generator(dim_folder).info
    fits = CodebookGenerator(10, 1, 32, codebook_size=3, code_dim=90, feature_dim=6, embed_dim=10, width=8,
                             backbone="dim")
    assert initialise_from(fits, str(dim_folder), info) == ["body", "fc"]
    torch.testing.assert_close(fits.body[0].weight, load_generator(dim_folder).body[0].weight)
    other_input = CodebookGenerator(10, 1, 32, codebook_size=3, code_dim=8, feature_dim=6, embed_dim=8, width=8,
                                    backbone="dim")
    assert initialise_from(other_input, str(dim_folder), info) == ["body"]
    with pytest.raises(GencondError, match="does not fit.*backbone blocks.*backbone: dim"):
        initialise_from(CodebookGenerator(10, 1, 32, width=8), str(dim_folder), info)
    assert main(["train", "codebook", "--init-generator", str(dim_folder), "--width", "8",
                 "--output-dir", str(tmp_path / "refused")]) == 2


# --- command line ---


@pytest.mark.slow
def test_cli_trains_samples_evaluates_and_refuses_bad_input(trained, tmp_path, capsys, cli_error):
    folder, _ = trained
    assert main(["sample", "--inpc", "4", "--checkpoint", str(folder), "--format", "npz",
                 "--out", str(tmp_path / "set.npz")]) == 0
    assert main(["eval", "--checkpoint", str(folder), "--inpc", "1", "--protocol", "fixed", "--seeds", "1",
                 "--epochs", "1", "--json", str(tmp_path / "eval.json")]) == 0
    capsys.readouterr()
    reshaped = tmp_path / "reshaped"
    shutil.copytree(folder, reshaped)
    config = json.loads((reshaped / "config.json").read_text())
    config["codebook_size"] = 5
    (reshaped / "config.json").write_text(json.dumps(config))
    bad = [
        (["sample", "--inpc", "2", "--checkpoint", str(reshaped)], "does not fit its config: codebook has shape (3, 8)"),
        (["sample", "--inpc", "0", "--checkpoint", str(folder)], "must be positive"),
        (["train", "codebook", "--codebook-size", "0", "--output-dir", str(tmp_path / "x")], "codebook_size must be positive"),
        (["train", "codebook", "--init-generator", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "x")],
         "no generator folder"),
        (["train", "codebook", "--phi-pool", "resnet10_cifar", "--output-dir", str(tmp_path / "x")], "must be ConvNets"),
        (["train", "codebook", "--class-embedding", "label", "--output-dir", str(tmp_path / "x")], "unknown class_embedding"),
        (["train", "codebook", "--code-init", "dm", "--output-dir", str(tmp_path / "x")], "unknown selection method"),
        (["eval", "--checkpoint", str(ROOT / "configs"), "--inpc", "1"], "config.json"),
    ]
    for argv, message in bad:
        cli_error(argv, message)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="torchrun test")
def test_two_processes_through_scripts_train_keep_identical_generators(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29519",
           str(ROOT / "scripts" / "train.py"), "codebook", "--dataset", "digits", "--epochs", "2",
           "--steps-per-epoch", "2", "--codebook-size", "2", "--width", "8", "--code-dim", "8", "--embed-dim", "8",
           "--feature-net-epochs", "0", "--class-feature-images", "16", "--association-size", "4",
           "--phi-training.batch-size", "16", "--output-dir", str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["method"] == "codebook"
    first, second = summary["weights_fingerprint_per_rank"]["gen"]
    assert first == second


def test_scripts_train_needs_a_generator_method(capsys):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "dm"], capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "METHOD is one of codebook, diffusion, dim" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_prefix_sizes_draw_one_prefix_uniformly_or_log_uniformly_or_take_every_prefix():
    assert prefix_sizes(4, "all", torch.Generator()) == [1, 2, 3, 4]
    drawn = int(torch.randint(1, 4, (1,), generator=torch.Generator().manual_seed(3)))
    assert prefix_sizes(4, "random", torch.Generator().manual_seed(3)) == [4, drawn] and 1 <= drawn <= 3
    u = torch.rand(1, generator=torch.Generator().manual_seed(5)).item()
    assert prefix_sizes(50, "log", torch.Generator().manual_seed(5)) == [50, int(50 ** u)]
    rng = torch.Generator().manual_seed(0)
    draws = torch.tensor([prefix_sizes(50, "log", rng)[1] for _ in range(4000)])
    assert draws.min() == 1 and draws.max() == 49
    # log-uniform: P(n < 7) = log 7 / log 50 ~ 0.50, where a uniform draw gives 6/49 ~ 0.12
    assert abs((draws < 7).float().mean().item() - math.log(7) / math.log(50)) < 0.03
    with pytest.raises(GencondError, match="nested_prefixes"):
        replace(TINY, nested_prefixes="some").check()
    with pytest.raises(GencondError, match="codes_per_step"):
        replace(TINY, codes_per_step=-1).check()


def test_code_groups_keep_short_prefixes_whole_and_draw_from_long_ones():
    groups = code_groups([50, 3], 10, torch.Generator().manual_seed(0))
    assert groups[1].tolist() == [0, 1, 2]
    expected = torch.randperm(50, generator=torch.Generator().manual_seed(0))[:10].sort().values
    assert torch.equal(groups[0], expected) and len(groups[0].unique()) == 10


def test_mean_parts_average_every_term_over_the_groups():
    parts = mean_parts([{"x": torch.tensor(float(n)), "y": torch.tensor(10.0 * n)} for n in (1, 2, 3, 4)])
    assert parts["x"].item() == 2.5 and parts["y"].item() == 25.0


def test_equal_time_epochs_counts_the_fixed_cost_once():
    import experiments.codebook.bench_codebook as bench

    # 100 s in all, 60 s of them in 6 logged epochs: 40 s fixed, 10 s per epoch.
    assert bench.equal_time_epochs({"train_seconds": 100.0, "epoch_seconds": 60.0}, 6, 240.0) == 20.0


# --- codes started from selected real images (code_init) ---


@pytest.mark.slow
def test_code_init_fits_every_code_to_its_selected_image_in_the_selections_order(tmp_path):
    cfg = replace(TINY, output_dir=str(tmp_path / "fit"), code_init="random", code_init_steps=60, code_init_lr=0.01,
                  width=16)
    trainer = CodebookTrainer(cfg)
    chosen = random_subset(trainer.train, cfg.codebook_size, cfg.seed)  # random: the seed's images, class by class
    expected = trainer.info.to_generator_range(trainer.train.images(chosen)).view(10, 3, 1, 32, 32)
    torch.testing.assert_close(trainer.code_targets, expected)
    before, _ = draw_fixed_set(trainer.raw_gen, 10, 3, seed=0)
    trainer.before_training()
    after, _ = draw_fixed_set(trainer.raw_gen, 10, 3, seed=0)
    targets = trainer.train.images(chosen)  # draw_fixed_set gives normalized images
    error_before, error_after = (before - targets).pow(2).mean(), (after - targets).pow(2).mean()
    assert error_after < 0.5 * error_before
    distances = torch.cdist(after.flatten(1), targets.flatten(1))  # each image nearest its own target
    assert torch.equal(distances.argmin(1), torch.arange(30))


@pytest.mark.slow
def test_code_init_resumes_exactly_without_fitting_again(tmp_path, monkeypatch):
    cfg = replace(TINY, code_init="random", code_init_steps=3)
    straight = train_codebook(replace(cfg, output_dir=str(tmp_path / "straight")))
    out = tmp_path / "resumed"
    train_codebook(replace(cfg, output_dir=str(out), epochs=1))
    fits = []
    original = CodebookTrainer.before_training
    monkeypatch.setattr(CodebookTrainer, "before_training", lambda self: fits.append(1) or original(self))
    resumed = train_codebook(replace(cfg, output_dir=str(out)), resume=True)
    assert fits == []
    a, b = load_generator(straight).state_dict(), load_generator(resumed).state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


@pytest.mark.slow
def test_codes_per_step_generates_only_the_drawn_codes_and_resumes_exactly(tmp_path, monkeypatch):
    cfg = replace(TINY, codebook_size=8, codes_per_step=1, nested=False)
    seen, start = [], {}
    original = CodebookTrainer.features

    def spy(self, ctx, classes, slots):
        start.setdefault("codebook", self.raw_gen.codebook.detach().clone())
        seen.append(slots.tolist())
        return original(self, ctx, classes, slots)

    monkeypatch.setattr(CodebookTrainer, "features", spy)
    straight = load_generator(train_codebook(replace(cfg, output_dir=str(tmp_path / "straight"))))
    assert len(seen) == 4 and all(len(slots) == 1 for slots in seen)
    untouched = sorted(set(range(8)) - {s for slots in seen for s in slots})
    assert untouched  # 4 steps of one code each leave at least 4 of the 8 codes as they started
    torch.testing.assert_close(straight.codebook.detach()[untouched], start["codebook"][untouched], rtol=0, atol=0)
    out = tmp_path / "resumed"
    train_codebook(replace(cfg, output_dir=str(out), epochs=1))
    resumed = load_generator(train_codebook(replace(cfg, output_dir=str(out)), resume=True))
    a, b = straight.state_dict(), resumed.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    seen.clear()
    train_codebook(replace(TINY, codebook_size=8, codes_per_step=2, nested_prefixes="log",
                           output_dir=str(tmp_path / "nested"), epochs=1))
    assert all(len(slots) <= 4 for slots in seen)  # the full set's 2 codes and the prefix's (at most) 2


def test_herding_start_ranks_images_in_the_feature_network_and_trains_it_once(monkeypatch):
    trained = []
    original = coresets.real_data_network
    monkeypatch.setattr(coresets, "real_data_network", lambda *a, **k: trained.append(a[1:]) or original(*a, **k))
    cfg = replace(TINY, code_init="herding", feature_net_epochs=1)
    trainer = CodebookTrainer(cfg)
    assert trained == [("convnet3", 1, trainer.device, TINY.seed)]
    net = coresets.embedding_network(trainer.train, feature_net_config(cfg, trainer.device), TINY.seed)
    expected = coresets.herding(trainer.train, TINY.codebook_size, TINY.seed,
                                feature_net_config(cfg, trainer.device))
    expected = expected[torch.argsort(trainer.train.labels[expected], stable=True)]
    images = trainer.info.to_generator_range(trainer.train.images(expected))
    torch.testing.assert_close(trainer.code_targets.flatten(0, 1), images)
    features, _ = class_statistics(net, trainer.train, TINY.class_feature_images, TINY.seed, trainer.device)
    torch.testing.assert_close(trainer.raw_gen.class_features, standardised(features))
    assert len(trained) == 1


def test_code_init_refuses_an_unknown_method_and_bad_steps():
    with pytest.raises(GencondError, match="unknown selection method 'dm'"):
        replace(TINY, code_init="dm").check()
    with pytest.raises(GencondError, match="code_init_steps and code_init_lr must be positive"):
        replace(TINY, code_init="herding", code_init_steps=0).check()


@pytest.mark.slow
def test_schedule_benchmark_scores_variants_on_the_validation_split_only(tmp_path):
    common = [
        sys.executable, "-m", "gencond", "sweep", "codebook", "--variant", "tiny={}",
        "--config", str(ROOT / "configs" / "codebook" / "digits.yaml"), "--work-dir", str(tmp_path / "runs"),
        "--inpc", "1", "--seeds", "1", "--eval-epochs", "1", "--herding-epochs", "0", "--validation-per-class", "5",
        "--json", str(tmp_path / "out.json"), "--set", "epochs=1", "--set", "steps_per_epoch=1",
        "--set", "codebook_size=2", "--set", "width=8", "--set", "code_dim=8", "--set", "embed_dim=8",
        "--set", "feature_net_epochs=0", "--set", "association_size=4", "--set", "code_init=''"]

    def run(*extra):
        return subprocess.run([*common, *extra], capture_output=True, text=True, check=False, cwd=tmp_path,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})

    result = run("--variant", "tiny herded={code_init: random, code_init_steps: 2}")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["validation_images"] == 50  # 5 per class, and the table says the test split is not read
    assert "test split is not read" in result.stdout
    names = [row["training_set"] for row in report["results"]]
    assert names == ["random", "herding", "tiny", "tiny herded"]
    assert report["configs"]["tiny herded"]["code_init"] == "random" and report["configs"]["tiny"]["code_init"] == ""

    # --reuse scores the trained variant again without training it; --no-real leaves out the real rows
    weights = tmp_path / "runs" / "tiny" / "generator" / "model.safetensors"
    trained_at = weights.stat().st_mtime_ns
    again = run("--reuse", "--no-real")
    assert again.returncode == 0, again.stderr[-2000:]
    report = json.loads((tmp_path / "out.json").read_text())
    assert [row["training_set"] for row in report["results"]] == ["tiny"]
    assert report["train_seconds"] == {"tiny": None} and weights.stat().st_mtime_ns == trained_at

    # a generator trained from another config is refused with one line, not scored as this one
    other = run("--reuse", "--no-real", "--set", "lr_generator=0.5")
    assert other.returncode == 2 and weights.stat().st_mtime_ns == trained_at
    assert other.stderr.count("\n") == 1 and "tiny/generator was made with another lr_generator" in other.stderr, other.stderr
