"""The truncation trick at serving time: the truncated normal's known moments, the plain
draw unchanged when it is off, a codebook's learned codes untouched, the setting recorded
and followed by every sampler, and the one-line errors."""

import math
from pathlib import Path

import pytest
import torch

from gencond.artifacts import CondensedSet
from gencond.errors import GencondError
from gencond.models import load_generator
from gencond.models.generators import gaussian_latents
from gencond.serve import GeneratorDataset, sample_set

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"


def truncated_normal_variance(psi: float) -> float:
    """Var of N(0, 1) truncated to [-psi, psi]: 1 - 2 psi phi(psi) / (2 Phi(psi) - 1)."""
    density = math.exp(-psi * psi / 2) / math.sqrt(2 * math.pi)
    return 1 - 2 * psi * density / math.erf(psi / math.sqrt(2))


def test_no_truncation_is_the_plain_gaussian_draw_bit_for_bit():
    plain = torch.randn(7, 5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(gaussian_latents(7, 5, torch.Generator().manual_seed(3)), plain)


@pytest.mark.parametrize("psi, variance", [(1.0, 0.29112), (0.5, 0.08059), (2.0, 0.77374)])
def test_truncated_draws_stay_within_psi_with_the_truncated_normals_variance(psi, variance):
    assert truncated_normal_variance(psi) == pytest.approx(variance, abs=1e-5)  # the formula, by hand
    z = gaussian_latents(200_000, 2, torch.Generator().manual_seed(0), psi)
    assert z.dtype == torch.float32 and z.abs().max() <= psi
    assert z.mean().abs() < 0.005
    assert z.var().item() == pytest.approx(variance, abs=0.005)
    # the mass is spread over the interval, not piled at its ends
    assert (z.abs() > 0.99 * psi).float().mean() < 0.01


def test_a_truncated_dim_generator_draws_smaller_latents_and_records_psi():
    generator = load_generator(CHECKPOINTS / "dim_digits")
    truncated = generator.truncated(0.5)
    assert generator.truncation == 0 and truncated.fc[0].weight is generator.fc[0].weight  # the same weights
    latents = truncated.latents(None, 1000, torch.Generator().manual_seed(0))
    assert latents.abs().max() <= 0.5
    plain_set, truncated_set = sample_set(generator, 2, seed=4), sample_set(truncated, 2, seed=4)
    assert "truncation" not in plain_set.config and truncated_set.config["truncation"] == 0.5
    assert not torch.equal(plain_set.images, truncated_set.images)
    assert torch.equal(sample_set(truncated, 2, seed=4).images, truncated_set.images)  # same seed, same set
    served = GeneratorDataset(truncated, inpc=2, seed=4)
    assert torch.equal(torch.stack([served[i][0] for i in range(len(served))]), truncated_set.images)


def test_truncation_keeps_a_codebooks_learned_codes_and_shrinks_its_extra_ones():
    generator = load_generator(CHECKPOINTS / "codebook_digits")
    net, k = generator, generator.codebook_size
    slots = torch.arange(3 * k)
    plain = generator.latents(slots, len(slots), torch.Generator().manual_seed(0))
    truncated = generator.truncated(0.25).latents(slots, len(slots), torch.Generator().manual_seed(0))
    codebook = net.codebook.detach().float()
    assert torch.equal(truncated[:k], codebook) and torch.equal(plain[:k], codebook)
    spread = codebook.std(0) * net.extra_code_spread
    offsets = (truncated[k:] - codebook[slots[k:] % k]) / spread
    assert offsets.abs().max() <= 0.25 + 1e-5
    assert ((plain[k:] - codebook[slots[k:] % k]) / spread).abs().max() > 0.25


@pytest.mark.parametrize("psi", [-0.5, float("nan")])
def test_a_negative_or_nan_truncation_is_refused(psi):
    with pytest.raises(GencondError, match="truncation must be >= 0"):
        load_generator(CHECKPOINTS / "dim_digits").truncated(psi)


def test_cli_samples_truncated_latents_and_refuses_a_negative_psi(tmp_path, capsys, cli_error):
    from gencond.cli import main

    out = tmp_path / "truncated.safetensors"
    assert main(["sample", "--inpc", "2", "--truncation", "0.7", "--format", "safetensors", "--out", str(out)]) == 0
    assert "latents truncated at 0.7" in capsys.readouterr().out
    assert CondensedSet.load(out).config["truncation"] == 0.7
    cli_error(["sample", "--inpc", "2", "--truncation", "-1", "--out", tmp_path / "bad"], "truncation must be >= 0")
    assert not (tmp_path / "bad").exists()


def test_eval_trains_on_truncated_sets_and_names_them(tmp_path, capsys, cli_error):
    import json

    from gencond.cli import main

    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(CHECKPOINTS / "dim_digits"), "--truncation", "0.5", "--inpc", "1",
                 "--protocol", "fixed", "--epochs", "1", "--seeds", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [r["training_set"] for r in rows] == ["generator (fixed, truncation 0.5)"]
    cli_error(["eval", "--checkpoint", CHECKPOINTS / "dim_digits", "--truncation", "-1", "--inpc", "1"],
              "truncation must be >= 0")
