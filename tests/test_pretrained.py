"""Generators as library objects: diffusers ModelMixin/ConfigMixin models that round-trip
through save_pretrained / from_pretrained as the class that was saved, for every registered
architecture; the shipped checkpoints and folders of the earlier layout load; the Hub calls
go through huggingface_hub (replaced here: no network)."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import ConfigMixin, ModelMixin

import gencond
from gencond.data import load_dataset
from gencond.errors import GencondError
from gencond.models import (
    CodebookGenerator,
    ConditionalGenerator,
    DiffusionGenerator,
    DiMGenerator,
    load_generator,
)
from gencond.models.generators import GENERATOR_CLASSES, read_generator_config

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
DIGITS = load_dataset("digits").info.to_dict()

# One small instance of every registered architecture, in each of its shapes worth checking.
SMALL = {
    "DiMGenerator": [dict(num_classes=10, channels=1, image_size=32, width=8, noise_dim=16, dataset=DIGITS),
                     dict(num_classes=3, channels=3, image_size=28, width=8, noise_dim=6, conditioning="concat"),
                     dict(num_classes=2, channels=3, image_size=64, width=4, noise_dim=8)],
    "CodebookGenerator": [dict(num_classes=10, channels=1, image_size=32, codebook_size=3, code_dim=5, feature_dim=6,
                               embed_dim=2, width=8, dataset=DIGITS),
                          dict(num_classes=4, channels=3, image_size=28, codebook_size=2, code_dim=4, feature_dim=6,
                               embed_dim=2, width=8, backbone="dim")],
    "DiffusionGenerator": [dict(num_classes=10, channels=1, image_size=32, block_channels=[8, 16], layers_per_block=1,
                                attention_levels=[1], sampling_steps=2, dataset=DIGITS),
                           dict(num_classes=3, channels=3, image_size=28, block_channels=[8], layers_per_block=1,
                                attention_levels=[], prediction_type="v_prediction", beta_schedule="squaredcos_cap_v2",
                                sampler="dpm", sampling_steps=3, guidance_scale=1.0)],
}
# A diffusion model's samplers compound the kernels' rounding (channels-last weights after loading) over steps.
TOLERANCE = {"DiffusionGenerator": 1e-4}


def test_every_registered_architecture_has_a_round_trip_case():
    assert set(SMALL) == set(GENERATOR_CLASSES)


@pytest.mark.parametrize("name, kwargs", [(name, kw) for name, cases in SMALL.items() for kw in cases])
def test_a_generator_round_trips_as_the_class_that_was_saved(tmp_path, name, kwargs):
    torch.manual_seed(0)
    net = GENERATOR_CLASSES[name](**kwargs).eval()
    for buffer in net.buffers():  # batch-norm statistics and class features travel too
        if buffer.is_floating_point():
            buffer.uniform_(0.5, 1.5)
    net.training_record = {"method": "test", "epochs": 1}
    net.save_pretrained(tmp_path / "g")
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["config.json", "model.safetensors"]
    for loader in (ConditionalGenerator.from_pretrained, GENERATOR_CLASSES[name].from_pretrained, load_generator,
                   gencond.load_generator):
        loaded = loader(tmp_path / "g")
        assert type(loaded) is type(net) and isinstance(loaded, (ModelMixin, ConfigMixin))
        assert json.loads(loaded.to_json_string()) == json.loads(net.to_json_string())
        assert loaded.training_record == {"method": "test", "epochs": 1} and loaded.info == net.info
        assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), loaded.state_dict().values()))
        labels = torch.arange(net.num_classes).repeat(2)
        latents = net.latents(torch.arange(2).repeat_interleave(net.num_classes), len(labels),
                              torch.Generator().manual_seed(3))
        torch.testing.assert_close(loaded.generate(labels, latents), net.generate(labels, latents), rtol=0,
                                   atol=TOLERANCE.get(name, 1e-6))


def test_from_pretrained_on_another_generator_class_refuses_in_one_line():
    with pytest.raises(GencondError, match="holds a DiMGenerator, which is not a CodebookGenerator"):
        CodebookGenerator.from_pretrained(CHECKPOINTS / "dim_digits")


def test_the_shipped_checkpoints_load_as_their_classes():
    dim, codebook = load_generator(CHECKPOINTS / "dim_digits"), load_generator(CHECKPOINTS / "codebook_digits")
    assert type(dim) is DiMGenerator and type(codebook) is CodebookGenerator
    assert isinstance(dim, ModelMixin) and dim.info.name == "digits" and dim.training_record["method"] == "dim"
    assert DiMGenerator.from_pretrained(CHECKPOINTS / "dim_digits").config.width == dim.width == 32
    assert not dim.training and next(dim.parameters()).device.type == "cpu"
    diffusion = load_generator(CHECKPOINTS / "diffusion_digits")
    assert type(diffusion) is DiffusionGenerator and diffusion.training_record["method"] == "diffusion"
    assert diffusion.sampling_description() == {"sampler": "ddim", "steps": 25, "guidance_scale": 2.0,
                                                "ddim_clip": "image"}


def test_a_folder_of_the_earlier_layout_loads_the_same_generator(tmp_path):
    shutil.copytree(CHECKPOINTS / "codebook_digits", tmp_path / "old")
    new = json.loads((tmp_path / "old" / "config.json").read_text())
    constructor = {k: v for k, v in new.items() if not k.startswith("_") and k != "dataset"}
    (tmp_path / "old" / "config.json").write_text(json.dumps({
        "format": "gencond-generator/1", "architecture": "codebook_generator", "generator": constructor,
        "dataset": new["dataset"], "training": new["_training"], "gencond_version": "0.1.0"}))
    assert read_generator_config(tmp_path / "old")["_class_name"] == "CodebookGenerator"
    old, shipped = load_generator(tmp_path / "old"), load_generator(CHECKPOINTS / "codebook_digits")
    assert type(old) is CodebookGenerator and old.training_record == shipped.training_record
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), shipped.state_dict().values()))


def test_truncated_serves_the_same_weights_without_changing_the_generator():
    generator = load_generator(CHECKPOINTS / "dim_digits")
    served = generator.truncated(0.5)
    assert served.truncation == 0.5 and generator.truncation == 0.0
    assert served.fc[0].weight is generator.fc[0].weight and type(served) is DiMGenerator
    with pytest.raises(GencondError, match="truncation must be >= 0"):
        generator.truncated(-1)


def test_a_dataset_description_that_does_not_fit_the_generator_is_refused():
    with pytest.raises(GencondError, match="the generator was built for 3 of 1 x 32 px"):
        DiMGenerator(num_classes=3, channels=1, image_size=32, width=8, dataset=DIGITS)


def test_save_pretrained_writes_safetensors_only(tmp_path):
    net = DiMGenerator(num_classes=2, channels=1, image_size=28, width=4, noise_dim=8)
    with pytest.raises(GencondError, match="no pickles"):
        net.save_pretrained(tmp_path / "g", safe_serialization=False)


class FakeHub:
    """The Hub functions diffusers and gencond call, over a local folder per repository."""

    def __init__(self, root: Path):
        self.root, self.uploads = root, []

    def create_repo(self, repo_id, **kwargs):
        return type("Repo", (), {"repo_id": repo_id})()

    def upload_folder(self, repo_id, folder_path, **kwargs):
        shutil.copytree(folder_path, self.root / repo_id, dirs_exist_ok=True)
        self.uploads.append((repo_id, sorted(p.name for p in Path(folder_path).iterdir())))

    def snapshot_download(self, repo_id, allow_patterns=(), **kwargs):
        if not (self.root / repo_id).is_dir():
            raise OSError(f"404 Client Error: Repository Not Found for url: https://huggingface.co/{repo_id}")
        return str(self.root / repo_id)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    import diffusers.utils.hub_utils as hub_utils
    import huggingface_hub

    fake = FakeHub(tmp_path / "hub")
    card = type("Card", (), {"save": lambda self, path: Path(path).write_text("card\n")})()
    monkeypatch.setattr(hub_utils, "create_repo", fake.create_repo)
    monkeypatch.setattr(hub_utils, "upload_folder", fake.upload_folder)
    monkeypatch.setattr(hub_utils, "load_or_create_model_card", lambda *args, **kwargs: card)
    monkeypatch.setattr(hub_utils, "populate_model_card", lambda card, *args, **kwargs: card)
    monkeypatch.setattr(huggingface_hub, "create_repo", fake.create_repo)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake.snapshot_download)
    return fake


def test_push_to_hub_uploads_the_folder_and_from_pretrained_reads_a_repository_id(hub, tmp_path):
    generator = load_generator(CHECKPOINTS / "codebook_digits")
    generator.push_to_hub("someone/codebook-digits")
    assert hub.uploads == [("someone/codebook-digits", ["README.md", "config.json", "model.safetensors"])]
    pulled = ConditionalGenerator.from_pretrained("someone/codebook-digits")
    assert type(pulled) is CodebookGenerator
    assert all(torch.equal(a, b) for a, b in zip(pulled.state_dict().values(), generator.state_dict().values()))
    generator.save_pretrained(tmp_path / "local", push_to_hub=True, repo_id="someone/again")
    assert hub.uploads[-1] == ("someone/again", ["config.json", "model.safetensors"])
    with pytest.raises(GencondError, match="the Hugging Face Hub did not give one .*Repository Not Found"):
        load_generator("someone/missing")
    with pytest.raises(GencondError, match="no generator folder at nowhere/at/all"):
        load_generator("nowhere/at/all")  # not a repository id: no download tried
