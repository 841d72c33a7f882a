"""D3HR fixed sets: DDIM inversion and the part-way start (known answers with a model that
predicts zero noise), the group score worked by hand, the group search, the class Gaussians,
and the sets (reproducible, per INPC, refused where they do not apply)."""

import math

import pytest
import torch

from gencond.data import DatasetInfo, TensorImageSet
from gencond.engine import d3hr as d3hr_module
from gencond.engine.d3hr import D3HR, choose_group, fit_latent_gaussians, group_scores
from gencond.errors import GencondError
from gencond.models import load_generator
from gencond.models.diffusion import DiffusionGenerator
from gencond.serve import sample_set

INFO = DatasetInfo("toy", 1, 8, ("a", "b", "c"), (0.5,), (0.5,))


def zero_noise_generator(**kwargs) -> DiffusionGenerator:
    """A generator whose UNet predicts zero noise everywhere: DDIM then only rescales x_t."""
    gen = DiffusionGenerator(3, channels=1, image_size=8, block_channels=[8, 8], layers_per_block=1,
                             attention_levels=[], sampling_steps=10, dataset=INFO.to_dict(), **kwargs)
    torch.nn.init.zeros_(gen.unet.conv_out.weight)
    torch.nn.init.zeros_(gen.unet.conv_out.bias)
    return gen


def toy_images(count: int = 12) -> TensorImageSet:
    pixels = torch.randint(20, 236, (count, 1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return TensorImageSet(INFO, pixels, torch.arange(count) % 3)


@pytest.mark.parametrize("strength, steps, timestep", [(1.0, 10, 900), (0.6, 6, 500), (0.01, 1, 0)])
def test_inversion_scales_by_sqrt_alpha_bar_and_the_part_way_start_undoes_it(strength, steps, timestep):
    gen = zero_noise_generator(guidance_scale=2.0)
    x, y = torch.rand(4, 1, 8, 8) * 1.8 - 0.9, torch.tensor([0, 1, 2, 0])  # mean 0.5, std 0.5: [-1, 1] as stored
    assert gen.inverted_steps(strength) == steps
    alpha_bar = gen.training_scheduler().alphas_cumprod[timestep]
    z = gen.invert(x, y, strength)
    torch.testing.assert_close(z, x * alpha_bar.sqrt(), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(gen.generate_from(y, z, strength), x, atol=1e-6, rtol=0)


def test_a_bad_strength_or_a_part_way_multistep_sampler_is_one_line():
    gen = zero_noise_generator()
    for bad in (0.0, 1.5):
        with pytest.raises(GencondError, match=r"strength must be in \(0, 1\]"):
            gen.invert(torch.zeros(1, 1, 8, 8), torch.tensor([0]), bad)
    with pytest.raises(GencondError, match="needs the ddim sampler, not dpm"):
        gen.with_sampler("dpm").generate_from(torch.tensor([0]), torch.zeros(1, 1, 8, 8), 0.5)


def test_group_score_known_answer():
    groups = torch.tensor([[[0.0, 0.0, 0.0], [2.0, 2.0, 4.0]]])  # one group of two latents, D = 3
    mean, std = torch.zeros(3), torch.ones(3)
    # mean error [1, 1, 2]; unbiased stds [sqrt 2, sqrt 2, 2 sqrt 2]; every standardised entry is -+1/sqrt 2, so
    # each latent's skewness is -+ 3 (1/sqrt 2)^3 x 3 / (2 x 1) and their norm over the group 2.25
    want = math.sqrt(6) + math.sqrt(2 * (math.sqrt(2) - 1) ** 2 + (2 * math.sqrt(2) - 1) ** 2) + 0.1 * 2.25
    assert group_scores(groups, mean, std).item() == pytest.approx(want, rel=1e-6)
    assert group_scores(groups, mean, std, skew_weight=0.0).item() == pytest.approx(want - 0.225, rel=1e-6)
    single = torch.tensor([[[3.0, 4.0, 0.0]]])  # a group of one: its distance to the mean only
    assert group_scores(single, mean, std).item() == pytest.approx(5.0)


def test_the_group_kept_is_the_best_candidate_whatever_the_batch(monkeypatch):
    mean, std = torch.randn(6), torch.rand(6) + 0.5
    drawn = mean + std * torch.randn(40, 3, 6, generator=torch.Generator().manual_seed(5))
    best = drawn[group_scores(drawn, mean, std).argmin()]
    monkeypatch.setattr(d3hr_module, "GROUP_BATCH_FLOATS", 40 * 3 * 6)  # one batch: the same draws as above
    torch.testing.assert_close(choose_group(mean, std, 3, 40, torch.Generator().manual_seed(5)), best)
    monkeypatch.setattr(d3hr_module, "GROUP_BATCH_FLOATS", 7 * 3 * 6)  # batches of 7: a candidate of those batches
    kept = choose_group(mean, std, 3, 40, torch.Generator().manual_seed(5))
    assert kept.shape == (3, 6) and group_scores(kept[None], mean, std).item() <= group_scores(drawn, mean, std).max()
    with pytest.raises(GencondError, match="candidate groups must be positive"):
        choose_group(mean, std, 3, 0, torch.Generator())


def test_class_gaussians_are_the_inverted_images_statistics():
    gen, train = zero_noise_generator(), toy_images()
    fitted = fit_latent_gaussians(gen, train, 0.6, classes=torch.tensor([0, 2]), batch_size=5)
    scale = gen.training_scheduler().alphas_cumprod[500].sqrt()
    for c in (0, 2):
        z = INFO.to_generator_range(train.images(torch.nonzero(train.labels == c).flatten())) * scale
        torch.testing.assert_close(fitted.mean[c], z.mean(0), atol=1e-5, rtol=0)
        torch.testing.assert_close(fitted.std[c], z.std(0), atol=1e-5, rtol=0)
    assert not fitted.std[1].any() and fitted.images == 8
    assert fitted.sampling == {"sampler": "ddim", "steps": 10, "guidance_scale": 2.0, "ddim_clip": "consistent"}
    with pytest.raises(GencondError, match="class 1 has 1 training image"):
        fit_latent_gaussians(gen, TensorImageSet(INFO, train.array[:4], torch.tensor([0, 1, 2, 0])), 0.6)


def test_d3hr_sets_are_reproducible_chosen_per_inpc_and_recorded():
    gen, train = zero_noise_generator(), toy_images()
    d3hr = D3HR(fit_latent_gaussians(gen, train, 0.5), groups=50)
    a, b = sample_set(gen, 3, seed=1, d3hr=d3hr), sample_set(gen, 3, seed=1, batch_size=2, d3hr=d3hr)
    assert a.images.shape == (9, 1, 8, 8) and a.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    torch.testing.assert_close(a.images, b.images, atol=1e-6, rtol=0)
    assert not torch.allclose(a.images, sample_set(gen, 3, seed=2, d3hr=d3hr).images)
    assert a.config["latents"] == {"rule": "d3hr", "groups": 50, "skew_weight": 0.1, "strength": 0.5,
                                   "inverted_images": 12, "sampling": {"sampler": "ddim", "steps": 10,
                                                                       "guidance_scale": 2.0, "ddim_clip": "consistent"}}
    with pytest.raises(GencondError, match="D3HR latents and candidate selection both choose"):
        sample_set(gen, 1, candidates=2, d3hr=d3hr)
    with pytest.raises(GencondError, match="need a diffusion generator, not dim_generator"):
        fit_latent_gaussians(load_generator("checkpoints/dim_digits"), train, 0.5)


def test_bench_entries_take_d3hr_latents_and_refuse_them_where_they_do_not_apply():
    from gencond.evaluate.bench import parse_set

    spec = parse_set("d=generator:runs/d?latents=d3hr&strength=0.5")
    assert (spec.latents, spec.strength) == ("d3hr", 0.5)
    assert spec.entry == "d=generator:runs/d?latents=d3hr&strength=0.5"
    assert parse_set("d=generator:runs/d?latents=d3hr").options == {"latents": "d3hr"}
    for bad in ("latents=best", "latents=d3hr&strength=0", "latents=d3hr&strength=1.5"):
        with pytest.raises(GencondError, match=r"latents must be one of noise, d3hr and strength in \(0, 1\]"):
            parse_set(f"d=generator:runs/d?{bad}")
    for bad in ("latents=d3hr&candidates=2", "strength=0.5"):
        with pytest.raises(GencondError, match="strength is an option of latents=d3hr"):
            parse_set(f"d=generator:runs/d?{bad}")


def test_bf16_sampling_is_a_recorded_serving_setting_close_to_fp32():
    gen = DiffusionGenerator(3, channels=1, image_size=8, block_channels=[8, 8], layers_per_block=1,
                             attention_levels=[], sampling_steps=4, dataset=INFO.to_dict())
    fp32, bf16 = sample_set(gen, 2, seed=0), sample_set(gen.with_sampler(mixed_precision="bf16"), 2, seed=0)
    assert "mixed_precision" not in fp32.config["sampling"] and bf16.config["sampling"]["mixed_precision"] == "bf16"
    assert not torch.equal(fp32.images, bf16.images)
    x, t, y = torch.randn(4, 1, 8, 8), torch.tensor(500), torch.tensor([0, 1, 2, 0])
    exact, rounded = gen.guided_output(x, t, y), gen.with_sampler(mixed_precision="bf16").guided_output(x, t, y)
    assert rounded.dtype == torch.float32 and (rounded - exact).norm() < 0.05 * exact.norm()  # bf16: 8 bits
    with pytest.raises(GencondError, match="sampling precision must be one of no, bf16, fp16, auto"):
        gen.with_sampler(mixed_precision="fp8")
