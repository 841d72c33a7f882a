"""The diffusion generator: the minimax criteria (known answers, and the official per-class
loop), the memories, the schedule's algebra, the generator as a library object, and a tiny
training run through the shared trainer and the serving interface."""

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gencond.cli import main
from gencond.errors import GencondError
from gencond.losses.minimax import MinimaxMemory, minimax_losses
from gencond.methods.diffusion import DiffusionConfig, train_diffusion
from gencond.models import ConditionalGenerator, load_generator
from gencond.models.diffusion import DiffusionGenerator, predicted_original
from gencond.serve import sample_set

TINY = DiffusionConfig(dataset="digits", epochs=2, steps_per_epoch=2, batch_size=16, block_channels=[8, 16],
                       layers_per_block=1, attention_levels=[1], sampling_steps=3, condense=True,
                       condense_from_epoch=0, seed=4)


def official_minimax(embeddings, labels, real_memory, fake_memory, lambda_pos, lambda_neg):
    """The official train_dit.py's loop over classes, written out (memories as lists of rows)."""

    def cosine(a, b):
        return (a @ b.T) / (a.norm(dim=-1).view(-1, 1) * b.norm(dim=-1).view(1, -1))

    classes = sorted(set(labels.tolist()))
    pos = neg = 0.0
    for c in classes:
        if fake_memory[c]:
            mine = embeddings[labels == c]
            pos += (1 - cosine(mine, torch.stack(real_memory[c])).min()) * lambda_pos / len(classes)
            neg += cosine(mine, torch.stack(fake_memory[c])).max() * lambda_neg / len(classes)
    return pos, neg


def test_minimax_terms_known_answer():
    memory = MinimaxMemory(num_classes=3, size=4, dim=2)
    memory.update(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 1.0], [-1.0, 0.0]]),
                  torch.tensor([0, 0]))
    embeddings = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # one image of class 0, one of class 1 (memory empty)
    pos, neg = minimax_losses(embeddings, torch.tensor([0, 1]), memory, lambda_pos=0.5, lambda_neg=0.25)
    # class 0: cos with the real rows 1 and 0 -> 1 - min = 1; with the earlier embeddings 1/sqrt(2) and -1 -> max
    # 1/sqrt(2); class 1 adds nothing but counts among the batch's 2 classes
    assert pos.item() == pytest.approx(0.5 * 1 / 2)
    assert neg.item() == pytest.approx(0.25 * (1 / math.sqrt(2)) / 2)


def test_minimax_terms_equal_the_official_loop_and_carry_gradients():
    gen = torch.Generator().manual_seed(0)
    memory, real_rows, fake_rows = MinimaxMemory(5, 6, 12), [[] for _ in range(5)], [[] for _ in range(5)]
    for _ in range(4):  # a few batches fill the memories past their size for some classes
        labels = torch.randint(4, (9,), generator=gen)  # class 4 never appears
        real, fake = torch.randn(9, 12, generator=gen), torch.randn(9, 12, generator=gen)
        embeddings = torch.randn(9, 12, generator=gen, requires_grad=True)
        pos, neg = minimax_losses(embeddings, labels, memory, 0.002, 0.008)
        want_pos, want_neg = official_minimax(embeddings, labels, real_rows, fake_rows, 0.002, 0.008)
        assert pos.item() == pytest.approx(float(want_pos), rel=1e-5, abs=1e-9)
        assert neg.item() == pytest.approx(float(want_neg), rel=1e-5, abs=1e-9)
        if pos.item():
            (pos + neg).backward()
            assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0
        memory.update(real, fake, labels)
        for i, c in enumerate(labels.tolist()):
            real_rows[c] = (real_rows[c] + [real[i]])[-6:]
            fake_rows[c] = (fake_rows[c] + [fake[i]])[-6:]
    for c in range(5):  # the ring buffers hold the official lists' rows (in another order)
        assert memory.count[c] == len(real_rows[c])
        kept = memory.real[c, :len(real_rows[c])]
        assert sorted(kept.sum(1).tolist()) == pytest.approx(sorted(r.sum().item() for r in real_rows[c]))


def test_memory_keeps_the_last_rows_of_a_class_that_overflows_in_one_batch():
    memory = MinimaxMemory(2, 3, 1)
    memory.update(torch.arange(5.0).view(5, 1), -torch.arange(5.0).view(5, 1), torch.tensor([1, 1, 0, 1, 1]))
    assert memory.count.tolist() == [1, 3]
    assert sorted(memory.real[1, :, 0].tolist()) == [1.0, 3.0, 4.0] and memory.real[0, 0, 0] == 2.0
    memory.update(torch.tensor([[9.0]]), torch.tensor([[-9.0]]), torch.tensor([1]))  # overwrites the oldest, 1
    assert sorted(memory.real[1, :, 0].tolist()) == [3.0, 4.0, 9.0]
    assert sorted(memory.fake[1, :, 0].tolist()) == [-9.0, -4.0, -3.0]


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_the_predicted_clean_image_inverts_the_forward_process(prediction_type):
    gen = DiffusionGenerator(3, channels=1, image_size=28, block_channels=[8], layers_per_block=1,
                             attention_levels=[], prediction_type=prediction_type)
    scheduler = gen.training_scheduler()
    clean, noise = torch.rand(4, 1, 28, 28) * 2 - 1, torch.randn(4, 1, 28, 28)
    steps = torch.tensor([0, 10, 500, 999])
    noisy = scheduler.add_noise(clean, noise, steps)
    exact = noise if prediction_type == "epsilon" else scheduler.get_velocity(clean, noise, steps)
    torch.testing.assert_close(predicted_original(scheduler, noisy, exact, steps, prediction_type), clean,
                               atol=2e-3, rtol=0)  # eps at t = 999 is divided by sqrt(alpha-bar) ~ 0.006


@pytest.mark.parametrize("ddim_clip", ["consistent", "image"])
@pytest.mark.parametrize("served", [False, True])
def test_ddim_clipping_steps_with_the_noise_each_setting_names(ddim_clip, served):
    """Two DDIM steps (t = 500, then 0) of a denoiser predicting eps = 3 x, whose clean image
    leaves [-1, 1], written out by hand: x0 is clipped, and the step takes the noise the clipped
    image implies (consistent) or the model's own (image). The rule is saved with the model,
    or (``served``) the other one is saved and ``with_sampler`` serves this one."""
    other = {"consistent": "image", "image": "consistent"}[ddim_clip]
    gen = DiffusionGenerator(2, channels=1, image_size=28, block_channels=[8], layers_per_block=1,
                             attention_levels=[], sampling_steps=2, guidance_scale=1.0,
                             ddim_clip=other if served else ddim_clip)
    gen.guided_output = lambda x, t, labels: 3 * x
    gen = gen.with_sampler(ddim_clip=ddim_clip) if served else gen
    assert gen.sampling_description()["ddim_clip"] == ddim_clip
    alpha = gen.training_scheduler().alphas_cumprod.double()
    latents = gen.latents(None, 4, torch.Generator().manual_seed(0)).double()

    def step(x, a, a_prev, rederive):
        clean = ((x - (1 - a).sqrt() * 3 * x) / a.sqrt()).clamp(-1, 1)
        eps = (x - a.sqrt() * clean) / (1 - a).sqrt() if rederive else 3 * x
        return a_prev.sqrt() * clean + (1 - a_prev).sqrt() * eps

    one = torch.tensor(1.0, dtype=torch.float64)
    expected = {r: step(step(latents, alpha[500], alpha[0], r), alpha[0], one, r) for r in (True, False)}
    assert (expected[True] - expected[False]).abs().max() > 0.01  # the two differ here
    out = gen.info.to_generator_range(gen.generate(torch.tensor([0, 1, 0, 1]), latents.float()))
    torch.testing.assert_close(out.double(), expected[ddim_clip == "consistent"], atol=1e-4, rtol=0)


def test_the_generator_is_a_diffusers_model_that_loads_as_the_class_saved(tmp_path):
    gen = DiffusionGenerator(4, channels=1, image_size=28, block_channels=[8, 16], layers_per_block=1,
                             attention_levels=[1], sampling_steps=2)
    gen.save_pretrained(tmp_path / "g")
    loaded = ConditionalGenerator.from_pretrained(tmp_path / "g")
    assert type(loaded) is DiffusionGenerator and loaded.config.block_channels == [8, 16]
    latents = loaded.latents(None, 3, torch.Generator().manual_seed(0))
    assert latents.shape == (3, 1, 28, 28)
    labels = torch.tensor([0, 3, 1])
    torch.testing.assert_close(loaded.generate(labels, latents), gen.generate(labels, latents), atol=2e-4, rtol=0)
    one_by_one = torch.cat([loaded.generate(labels[i:i + 1], latents[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(one_by_one, loaded.generate(labels, latents), atol=2e-4, rtol=0)
    unguided = loaded.with_sampler(guidance_scale=1.0)
    assert loaded.guidance_scale == 2.0 and not torch.allclose(unguided.generate(labels, latents),
                                                                loaded.generate(labels, latents))
    assert unguided.unet is loaded.unet  # the same weights
    dpm = loaded.with_sampler(sampler="dpm", steps=3).generate(labels, latents)
    assert dpm.shape == (3, 1, 28, 28) and torch.isfinite(dpm).all()
    with pytest.raises(GencondError, match="ddim_clip must be one of consistent, image"):
        loaded.with_sampler(ddim_clip="x0")


@pytest.mark.parametrize("kwargs, message", [
    ({"sampler": "euler"}, "sampler must be one of ddim, dpm"),
    ({"sampling_steps": 0}, "sampling steps must be positive"),
    ({"block_channels": [8, 12]}, "multiple of 8"),
    ({"attention_levels": [2]}, "attention level 2 does not exist"),
    ({"beta_schedule": "cosine"}, "beta_schedule must be one of linear, squaredcos_cap_v2"),
    ({"ddim_clip": "x0"}, "ddim_clip must be one of consistent, image"),
])
def test_bad_generator_settings_are_one_line(kwargs, message):
    with pytest.raises(GencondError, match=message):
        DiffusionGenerator(2, channels=1, image_size=28, block_channels=kwargs.pop("block_channels", [8, 16]),
                           **kwargs)


def test_bad_training_settings_are_one_line_with_exit_status_2(capsys, tmp_path):
    code = main(["train", "diffusion", "--output-dir", str(tmp_path), "--p-uncond", "1.5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["gencond train: error: p_uncond must be in [0, 1), got 1.5"], err


def test_minimax_embeddings_are_the_images_or_a_frozen_networks_features():
    from gencond.data import DatasetInfo
    from gencond.methods.diffusion import minimax_embeddings
    from gencond.models import create_network

    info = DatasetInfo("toy", 1, 32, tuple("abc"), (0.3,), (0.4,))
    clean, predicted = torch.rand(4, 1, 32, 32) * 2 - 1, (torch.rand(4, 1, 32, 32) * 2 - 1).requires_grad_()
    real, fake = minimax_embeddings(None, info, clean, predicted)
    assert torch.equal(real, clean.flatten(1)) and torch.equal(fake, predicted.flatten(1))
    net = create_network("convnet3", 3, 1, 32).eval().requires_grad_(False)
    real, fake = minimax_embeddings(net, info, clean, predicted)
    torch.testing.assert_close(real, net.forward_features(((clean + 1) / 2 - 0.3) / 0.4))
    torch.testing.assert_close(fake, net.forward_features(((predicted + 1) / 2 - 0.3) / 0.4))
    assert real.shape == (4, net.num_features) and not real.requires_grad and fake.requires_grad


@pytest.mark.parametrize("field, value, message", [
    ("embedding", "pixels", "embedding must be one of output, features, got 'pixels'"),
    ("embed_epochs", 0, "embed_epochs must be >= 1, got 0"),
])
def test_bad_embedding_settings_are_one_line(field, value, message):
    with pytest.raises(GencondError, match=message):
        replace(TINY, **{"embedding": "features", field: value}).check()


@pytest.mark.slow
def test_feature_embedding_trains_and_resumes_bitwise(tmp_path):
    cfg = replace(TINY, embedding="features", embed_epochs=1)
    straight = train_diffusion(replace(cfg, output_dir=str(tmp_path / "straight")))
    log = [json.loads(line) for line in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    assert all({"pos", "neg"} <= r.keys() for r in log)
    train_diffusion(replace(cfg, output_dir=str(tmp_path / "resumed"), epochs=1))
    resumed = train_diffusion(replace(cfg, output_dir=str(tmp_path / "resumed")), resume=True)
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("diffusion")
    return train_diffusion(replace(TINY, output_dir=str(out))), out


@pytest.mark.slow
def test_training_logs_both_terms_and_serves_any_inpc_reproducibly(trained):
    folder, out = trained
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and all({"mse", "pos", "neg"} <= r.keys() for r in log)
    gen = load_generator(folder)
    assert isinstance(gen, DiffusionGenerator) and gen.training_record["method"] == "diffusion"
    a, b = sample_set(gen, 3, seed=1, batch_size=4), sample_set(gen, 3, seed=1, batch_size=30)
    assert a.images.shape == (30, 1, 32, 32) and a.images_per_class().tolist() == [3] * 10
    # the same images in any batch, to float rounding: oneDNN picks its kernels by batch size and
    # thread count (3e-5 apart at one thread after 25 steps; far below an 8-bit step, 4e-3)
    torch.testing.assert_close(a.images, b.images, atol=1e-4, rtol=0)
    torch.testing.assert_close(sample_set(gen, 1, seed=1).images, a.images[::3], atol=1e-4, rtol=0)
    assert not torch.allclose(a.images, sample_set(gen, 3, seed=2).images)


@pytest.mark.slow
def test_a_resumed_run_keeps_its_memories_and_ends_bitwise_equal(trained, tmp_path):
    folder, _ = trained
    train_diffusion(replace(TINY, output_dir=str(tmp_path), epochs=1))  # stops after epoch 1, as if interrupted
    resumed = train_diffusion(replace(TINY, output_dir=str(tmp_path)), resume=True)
    straight, again = load_file(str(folder / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert straight.keys() == again.keys() and all(torch.equal(straight[k], again[k]) for k in straight)


@pytest.mark.slow
def test_sample_command_takes_the_sampler_settings(trained, tmp_path, capsys):
    folder, _ = trained
    out = tmp_path / "set.safetensors"
    code = main(["sample", "--checkpoint", str(folder), "--inpc", "2", "--format", "safetensors", "--out", str(out),
                 "--sampler", "dpm", "--sampling-steps", "2", "--guidance-scale", "1.5", "--mixed-precision", "bf16"])
    assert code == 0, capsys.readouterr().err
    from gencond.artifacts import CondensedSet

    stored = CondensedSet.load(out)
    assert stored.config["sampling"] == {"sampler": "dpm", "steps": 2, "guidance_scale": 1.5, "mixed_precision": "bf16"}
    code = main(["sample", "--checkpoint", str(folder), "--inpc", "1", "--format", "safetensors", "--out", str(out),
                 "--sampling-steps", "2", "--ddim-clip", "image"])
    assert code == 0 and CondensedSet.load(out).config["sampling"]["ddim_clip"] == "image"
    code = main(["sample", "--inpc", "1", "--ddim-clip", "image", "--out", str(tmp_path / "png")])  # DiM
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["gencond sample: error: sampler settings (sampler, steps, guidance scale, "
                                 "precision, DDIM clipping) are for diffusion generators; this one is a DiMGenerator"], err


@pytest.mark.slow
def test_sample_and_bench_serve_d3hr_latents(trained, tmp_path, capsys):
    from gencond.artifacts import CondensedSet
    from gencond.data import DataConfig
    from gencond.evaluate.bench import d3hr_of, parse_set
    from gencond.evaluate.protocol import generator_sets

    folder, _ = trained
    out = tmp_path / "d3hr.safetensors"
    code = main(["sample", "--checkpoint", str(folder), "--inpc", "2", "--classes", "0", "3", "--latents", "d3hr",
                 "--strength", "0.5", "--groups", "20", "--format", "safetensors", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    stored, splits = CondensedSet.load(out), DataConfig(dataset="digits").load_splits()
    assert stored.labels.tolist() == [0, 0, 3, 3]
    assert stored.config["latents"]["inverted_images"] == int(((splits.train.labels == 0) | (splits.train.labels == 3)).sum())
    fit, made = d3hr_of(parse_set("d=generator:x?latents=d3hr&strength=0.5"), splits), []
    (row,) = generator_sets(splits, str(folder), [1], ["fixed", "fresh"], torch.device("cpu"),
                            d3hr=lambda g: made.append(fit(g)) or made[-1])
    assert row.name == "generator (fixed, D3HR latents)"  # fixed sets only
    images = row.make(0).fetch(torch.arange(10))[0]
    assert len(made) == 1 and made[0].gaussians.images == len(splits.train) and made[0].gaussians.strength == 0.5
    torch.testing.assert_close(images, sample_set(load_generator(folder), 1, 0, d3hr=made[0]).images, atol=1e-5, rtol=0)
    code = main(["sample", "--inpc", "1", "--latents", "d3hr", "--out", str(tmp_path / "png")])  # DiM
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["gencond sample: error: D3HR latents need a diffusion generator, not dim_generator"], err
    code = main(["sample", "--inpc", "1", "--strength", "0.5", "--out", str(tmp_path / "png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["gencond sample: error: --strength and --groups are D3HR's: add --latents d3hr"], err


def test_bench_set_entries_take_the_sampler_settings():
    from gencond.evaluate.bench import parse_set

    spec = parse_set("d=generator:runs/d?sampler=dpm&steps=10&guidance=1.5")
    assert (spec.sampler, spec.steps, spec.guidance) == ("dpm", 10, 1.5)
    assert spec.entry == "d=generator:runs/d?sampler=dpm&steps=10&guidance=1.5"
    assert parse_set("d=generator:runs/d?guidance=0").options == {"guidance": "0"}  # 0 is a scale, not "as saved"
    assert parse_set("d=generator:runs/d").options == {}
    assert parse_set("d=generator:runs/d?precision=bf16").precision == "bf16"
    clipped = parse_set("d=generator:runs/d?clip=image")
    assert clipped.sampling["ddim_clip"] == "image" and clipped.served_name == "d clip=image"
    for bad in ("sampler=euler", "steps=0", "guidance=-2", "precision=fp8", "clip=x0"):
        with pytest.raises(GencondError, match="sampler must be one of ddim, dpm, steps >= 1, guidance >= 0, "
                                               "precision one of no, bf16, fp16, auto and clip one of consistent, "
                                               "image"):
            parse_set(f"d=generator:runs/d?{bad}")


@pytest.mark.slow
def test_bench_serves_a_diffusion_set_with_its_settings_and_refuses_them_for_dim(trained, tmp_path):
    from gencond.data import DataConfig
    from gencond.evaluate.protocol import generator_sets

    splits = DataConfig(dataset="digits").load_splits()
    (row,) = generator_sets(splits, str(trained[0]), [2], ["fixed"], torch.device("cpu"),
                            sampling={"sampler": "dpm", "steps": 2, "guidance_scale": None})
    images, labels = row.make(0).fetch(torch.arange(20))
    want = sample_set(load_generator(trained[0]).with_sampler("dpm", 2), 2, 0)
    torch.testing.assert_close(images, want.images, atol=1e-5, rtol=0)
    assert labels.tolist() == want.labels.tolist()
    with pytest.raises(GencondError, match="this one is a DiMGenerator"):
        generator_sets(splits, "checkpoints/dim_digits", [2], ["fixed"], torch.device("cpu"),
                       sampling={"sampler": None, "steps": 4, "guidance_scale": None})


def test_the_pool_protocol_draws_inpc_per_class_from_its_pool_each_epoch():
    from gencond.evaluate.protocol import PoolSamples
    from gencond.models.gan import DiMGenerator

    gen = DiMGenerator(3, 1, 28, width=8, noise_dim=4)
    pool = PoolSamples(gen, inpc=2, factor=3, seed=0)
    assert pool.images.shape == (18, 1, 28, 28)
    torch.testing.assert_close(pool.images, sample_set(gen, 6, 0).images)  # the seed's set of 6 per class
    rng = torch.Generator().manual_seed(1)
    epochs = [torch.cat([images for images, _ in pool.epoch(4, rng)]) for _ in range(2)]
    labels = torch.cat([labels for _, labels in pool.epoch(4, rng)])
    assert sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2]
    flat = pool.images.flatten(1)
    for drawn in epochs:
        rows = [int((flat == image.flatten()).all(1).nonzero()) for image in drawn]
        assert len(set(rows)) == 6 and sorted(r // 6 for r in rows) == [0, 0, 1, 1, 2, 2]
    assert not torch.equal(epochs[0], epochs[1])  # drawn anew every epoch


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="torchrun test")
def test_two_processes_keep_identical_weights_and_memories(tmp_path):
    """With ``embedding: features`` (the frozen network broadcast from the main process), which
    runs the path of the default embedding too."""
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29523",
           str(root / "scripts" / "train.py"), "diffusion", "--dataset", "digits", "--epochs", "2",
           "--steps-per-epoch", "2", "--batch-size", "8", "--block-channels", "8", "16", "--layers-per-block", "1",
           "--attention-levels", "1", "--sampling-steps", "2", "--sample-every", "0", "--condense",
           "--embedding", "features", "--embed-epochs", "1", "--output-dir", str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["method"] == "diffusion"
    first, second = summary["weights_fingerprint_per_rank"]["gen"]
    assert first == second
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert log[-1]["neg"] > 0  # the memories held earlier rows of both processes' batches
