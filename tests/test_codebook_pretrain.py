"""The codebook generator's pretraining stage (the paper pretrains G on the task data): a
class-conditional GAN stage in its own folder, then condensation from its generator; a run
stopped in either stage resumes to the bits of an uninterrupted one."""

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file
from test_reliability import Stopped, stop_before_step

from gencond.engine import RealBatchConfig
from gencond.errors import GencondError
from gencond.methods.codebook import (
    PRETRAIN_DIR,
    CodebookConfig,
    CodebookPretrainTrainer,
    CodebookTrainer,
    pretrain_config,
    train_codebook,
)
from gencond.models import load_generator

TINY = CodebookConfig(dataset="digits", epochs=1, steps_per_epoch=2, codebook_size=3, code_dim=8, embed_dim=8,
                      width=8, feature_net_epochs=0, class_feature_images=16, association_size=4,
                      phi_training=RealBatchConfig(batches=1, batch_size=16), phi_reinit_every=2, sample_every=0,
                      seed=1, pretrain_epochs=2, pretrain_batch_size=16, code_init="herding", code_init_steps=3)


def weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_pretraining_is_dims_gan_phase_on_the_codebook_generator():
    stage = pretrain_config(TINY)
    assert (stage.gan_epochs, stage.match_epochs, stage.noise_dim, stage.width) == (2, 0, 8, 8)
    assert (stage.batch_size, stage.lr, stage.select_by, stage.seed) == (16, TINY.pretrain_lr, "last", 1)
    assert stage.output_dir.endswith(PRETRAIN_DIR)
    with pytest.raises(GencondError, match="give one of them"):
        replace(TINY, init_generator=".").check()


def test_condensation_starts_from_the_pretrained_generator_and_fits_only_the_codes(tmp_path):
    final = train_codebook(replace(TINY, output_dir=str(tmp_path)))
    pretrained = load_generator(tmp_path / PRETRAIN_DIR / "generator")
    assert pretrained.training_record["method"] == "codebook_pretrain"
    assert load_generator(final).training_record["pretrain_epochs"] == 2
    start = CodebookTrainer(replace(TINY, output_dir=str(tmp_path / "probe")), start=str(tmp_path / PRETRAIN_DIR /
                                                                                           "generator"))
    before = {k: v.clone() for k, v in start.raw_gen.state_dict().items()}
    for key, value in pretrained.state_dict().items():
        if key not in ("codebook", "class_features"):
            assert torch.equal(before[key], value), key  # body, input layer and class projection all loaded
    start.before_training()  # code_init: herded images
    after = start.raw_gen.state_dict()
    assert not torch.equal(after["codebook"], before["codebook"])
    assert all(torch.equal(after[k], before[k]) for k, p in start.raw_gen.named_parameters() if k != "codebook")


@pytest.mark.parametrize("stage, trainer_class, stop", [("pretraining", CodebookPretrainTrainer, 3),
                                                        ("condensation", CodebookTrainer, 1)])
def test_a_run_stopped_in_either_stage_resumes_bitwise(monkeypatch, tmp_path, stage, trainer_class, stop):
    straight = weights(train_codebook(replace(TINY, output_dir=str(tmp_path / "straight"))))
    stopped = replace(TINY, output_dir=str(tmp_path / "stopped"), save_every_steps=1)
    with monkeypatch.context() as patch:
        stop_before_step(patch, trainer_class, stop)
        with pytest.raises(Stopped):
            train_codebook(stopped)
    resumed = weights(train_codebook(stopped, resume=True))
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight), stage
    log = [json.loads(line) for line in (tmp_path / "stopped" / PRETRAIN_DIR / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]


def test_a_finished_pretraining_of_another_config_is_not_reused(tmp_path):
    train_codebook(replace(TINY, output_dir=str(tmp_path), epochs=1))
    with pytest.raises(GencondError, match="pretrain_lr|lr"):
        train_codebook(replace(TINY, output_dir=str(tmp_path), pretrain_lr=5e-4))
