"""End-to-end DiM at a tiny size: training, resume, artifacts, sampling, serving, CLI errors."""

import json
import os
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import pytest
import torch
from conftest import driver, driver_env
from safetensors.torch import load_file, save_file

from gencond.cli import main
from gencond.engine import RealBatchConfig
from gencond.errors import GencondError
from gencond.methods.dim import MATCHING_FIELDS, DiMConfig, train_dim
from gencond.models import load_generator
from gencond.runtime import CPU_FLAGS, resolve_precision, slow_precision_warning
from gencond.serve import GeneratorDataset, sample_set
from gencond.training.trainer import reusable_generator

ROOT = Path(__file__).resolve().parents[1]
TINY = DiMConfig(dataset="digits", width=8, batch_size=16, gan_epochs=1, match_epochs=1, steps_per_epoch=2,
                 pool=["convnet3"], pool_training=RealBatchConfig(batches=1, batch_size=16), match_batch=20, seed=3)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("dim")
    return train_dim(replace(TINY, output_dir=str(out))), out


def weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


def test_training_writes_state_grids_log_and_both_generators(trained):
    generator_dir, out = trained
    assert (out / "state").is_dir() and not (out / "state.tmp").exists()
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["epoch_0001.png", "epoch_0002.png"]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in log] == [1, 2] and "match" in log[1] and log[1]["pool_network"] == "convnet3"
    assert (out / "generator_phase1" / "model.safetensors").is_file()
    generator = load_generator(generator_dir)
    assert generator.info.name == "digits" and generator.width == 8


def test_a_reused_generator_must_come_from_the_same_method_and_config(trained, tmp_path):
    generator_dir, out = trained
    cfg = replace(TINY, output_dir=str(out))
    assert reusable_generator("dim", cfg) == generator_dir
    assert reusable_generator("dim", replace(TINY, output_dir=str(tmp_path))) is None  # nothing trained there
    with pytest.raises(GencondError, match=r"generator was made with another lr, match_epochs: remove it"):
        reusable_generator("dim", replace(cfg, lr=0.5, match_epochs=3))
    with pytest.raises(GencondError, match=r"generator was made with another method dim: remove it"):
        reusable_generator("codebook", cfg)


def test_the_gan_phase_reads_none_of_the_matching_fields(tmp_path):
    gan = replace(TINY, match_epochs=0)
    changed = replace(gan, match="features", match_weight=1.0, match_lr=1e-3, match_batch=10, match_augment=False,
                      pool=["mlp3"], pool_training=RealBatchConfig(batches=2, batch_size=8), dsa_strategy="color",
                      dsa_mode="dsa")
    assert {f.name for f in fields(DiMConfig) if getattr(gan, f.name) != getattr(changed, f.name)} == \
        set(MATCHING_FIELDS) - {"match_epochs"}  # every matching field changed here, and nothing else
    changed.check()
    first = weights(train_dim(replace(gan, output_dir=str(tmp_path / "as configured"))))
    second = weights(train_dim(replace(changed, output_dir=str(tmp_path / "matching changed"))))
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_bench_dim_reuses_a_gan_phase_across_matching_variants_and_refuses_other_configs(tmp_path):
    import experiments.dim_vs_cgan.bench_dim as bench_dim

    first = bench_dim.train_branches(TINY, tmp_path, ["dim"], {}, reuse_shared=True)
    assert "shared_gan_phase_s" in first["timings"]  # nothing there yet: trained
    matching = replace(TINY, match_weight=1.0)
    again = bench_dim.train_branches(matching, tmp_path, [], {"weight 1": matching}, reuse_shared=True,
                                     reuse_branches=True)
    assert set(again["timings"]) == {"weight 1_continuation_s"}  # the GAN phase reused, the variant trained
    with pytest.raises(GencondError, match=r"dim/generator was made with another match_weight: remove it"):
        bench_dim.train_branches(matching, tmp_path, ["dim"], {}, reuse_shared=True, reuse_branches=True)
    with pytest.raises(GencondError, match=r"shared/generator was made with another lr: remove it"):
        bench_dim.train_branches(replace(TINY, lr=0.5), tmp_path, ["dim"], {}, reuse_shared=True)


def test_resume_continues_exactly(trained, tmp_path):
    _, out = trained
    first = replace(TINY, output_dir=str(tmp_path), match_epochs=0)
    train_dim(first)  # stops after epoch 1, as if interrupted
    resumed = train_dim(replace(TINY, output_dir=str(tmp_path)), resume=True)
    straight, again = weights(out / "generator"), weights(resumed)
    assert straight.keys() == again.keys()
    for key in straight:
        assert torch.equal(straight[key], again[key]), key


def test_resume_without_state_is_a_clear_error(tmp_path):
    with pytest.raises(GencondError, match="no saved training state"):
        train_dim(replace(TINY, output_dir=str(tmp_path)), resume=True)


def test_sampling_is_exact_and_reproducible(trained):
    generator = load_generator(trained[0])
    a = sample_set(generator, 5, seed=1, batch_size=7)
    b = sample_set(generator, 5, seed=1, batch_size=50)
    assert a.images.shape == (50, 1, 32, 32) and a.images_per_class().tolist() == [5] * 10
    torch.testing.assert_close(a.images, b.images, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a.images, sample_set(generator, 5, seed=2).images)
    assert sample_set(generator, 2, classes=[3, 7]).labels.tolist() == [3, 3, 7, 7]


def test_generator_dataset_trains_a_network_through_a_dataloader(trained):
    generator = load_generator(trained[0])
    fixed = GeneratorDataset(generator, inpc=4, seed=0, batch_size=16)
    assert len(fixed) == 40 and fixed[5][1] == 1 and fixed[39][1] == 9
    torch.testing.assert_close(fixed[7][0], GeneratorDataset(generator, inpc=4, seed=0, batch_size=3)[7][0],
                               atol=1e-5, rtol=1e-5)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 10))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    loader = torch.utils.data.DataLoader(fixed, batch_size=8, shuffle=True)
    for x, y in loader:
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.isfinite(loss)

    fresh = GeneratorDataset(generator, inpc=2, seed=0, fresh=True)
    first = torch.stack([fresh[i][0] for i in range(len(fresh))])
    second = torch.stack([fresh[i][0] for i in range(len(fresh))])  # epoch advanced by itself
    assert fresh.epoch == 2 and not torch.allclose(first, second)
    fresh.set_epoch(0)
    torch.testing.assert_close(torch.stack([fresh[i][0] for i in range(len(fresh))]), first)


def test_cli_sample_and_eval_on_a_trained_generator(trained, tmp_path, capsys):
    folder = str(trained[0])
    assert main(["sample", "--inpc", "3", "--checkpoint", folder, "--out", str(tmp_path / "png")]) == 0
    assert sorted(p.name for p in (tmp_path / "png").iterdir())[:2] == ["0_0", "1_1"]
    assert len(list((tmp_path / "png" / "9_9").iterdir())) == 3
    assert main(["sample", "--inpc", "2", "--checkpoint", folder, "--format", "pt", "--out", str(tmp_path / "s.pt")]) == 0
    assert main(["eval", "--condensed", str(tmp_path / "s.pt"), "--epochs", "1", "--seeds", "1",
                 "--json", str(tmp_path / "a.json")]) == 0
    assert main(["eval", "--checkpoint", folder, "--inpc", "1", "--epochs", "1", "--seeds", "1",
                 "--json", str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    assert "generator (fixed) | 1" in out and "generator (fresh) | 1" in out


def test_bad_generator_inputs(trained, tmp_path, cli_error):
    folder = trained[0]
    cli_error(["sample", "--inpc", "0", "--checkpoint", str(folder)], "INPC) must be positive")
    cli_error(["sample", "--inpc", "2", "--checkpoint", str(folder), "--classes", "10"],
              "class index 10 is out of range")
    cli_error(["sample", "--inpc", "2", "--checkpoint", str(tmp_path / "none")], "no generator folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    cli_error(["sample", "--inpc", "2", "--checkpoint", str(empty)], "has no config.json")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "config.json").write_text((folder / "config.json").read_text())
    state = weights(folder)
    state["fc.0.weight"] = torch.zeros(3, 3)
    save_file(state, str(wrong / "model.safetensors"))
    cli_error(["sample", "--inpc", "2", "--checkpoint", str(wrong)], "fc.0.weight has shape (3, 3)")
    torch.save(weights(folder), wrong / "model.safetensors")  # a pickle under the safetensors name
    cli_error(["sample", "--inpc", "2", "--checkpoint", str(wrong)], "pickles are never loaded")
    cli_error(["eval", "--checkpoint", str(folder), "--inpc", "0"], "INPC) must be positive")
    cli_error(["eval", "--checkpoint", str(folder), "--dataset", "mnist", "--data-root",
               str(ROOT.parent / "shared" / "data")], "1x32x32 images of 10 classes, but mnist has 1x28x28")


def launch_two_processes(*flags: str) -> None:
    """``scripts/train_dim.py`` in 2 CPU processes, launched the way users launch:
    ``accelerate launch`` with the shipped 2-process CPU config."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "configs" / "accelerate" / "cpu_2proc.yaml"), str(ROOT / "scripts" / "train_dim.py"),
           "--dataset", "digits", "--width", "8", *flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


two_cpu_processes = pytest.mark.skipif(sys.platform != "linux" or torch.cuda.is_available(),
                                       reason="2 CPU processes, Linux")


@two_cpu_processes
def test_two_processes_keep_identical_generators_and_only_rank_0_writes(tmp_path):
    launch_two_processes("--batch-size", "16", "--gan-epochs", "1", "--match-epochs", "1", "--steps-per-epoch", "2",
                         "--pool", "convnet3", "--pool-training.batches", "1", "--pool-training.batch-size", "16",
                         "--match-batch", "20", "--output-dir", str(tmp_path))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["written_by_rank"] == 0
    first, second = summary["weights_fingerprint_per_rank"]["gen"]
    assert first == second
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["rank"] for r in log] == [0, 0]  # one line per epoch: rank 1 wrote nothing


def feeds_batch_norm(key: str, state: dict) -> bool:
    """``PARENT.i.bias`` whose next module ``PARENT.(i+1)`` is a batch norm."""
    module, _, name = key.rpartition(".")
    parent, _, index = module.rpartition(".")
    return name == "bias" and index.isdigit() and f"{parent}.{int(index) + 1}.running_mean".lstrip(".") in state


@two_cpu_processes
def test_two_processes_at_half_the_batch_take_the_step_of_one_process_at_the_whole_batch(tmp_path):
    """The batch rule: the global batch is the per-process batch x processes. With batch
    norm over the global batch, 2 processes at B/2 take the first step 1 process takes at B
    (same real images, same noise, same critic draws). Left out: the biases feeding a batch
    norm, whose gradient is zero by construction (the norm subtracts their mean), so Adam's
    first step moves them by +-lr on rounding noise, and the running means that carry them.
    Each process normalising its own half moves every weight differently."""
    step = ["--gan-epochs", "1", "--match-epochs", "0", "--steps-per-epoch", "1", "--sample-every", "0", "--seed", "3"]
    train_dim(DiMConfig(dataset="digits", width=8, batch_size=16, gan_epochs=1, match_epochs=0, steps_per_epoch=1,
                        sample_every=0, seed=3, output_dir=str(tmp_path / "one")))
    launch_two_processes(*step, "--batch-size", "8", "--sync-batchnorm", "--output-dir", str(tmp_path / "global"))
    launch_two_processes(*step, "--batch-size", "8", "--output-dir", str(tmp_path / "own"))

    def largest_difference(run: str, part: str) -> float:
        one, two = (load_file(str(tmp_path / name / "state" / part)) for name in ("one", run))
        compared = [key for key in one if one[key].is_floating_point() and not key.endswith("running_mean")
                    and not feeds_batch_norm(key, one)]
        return max((one[key] - two[key]).abs().max().item() for key in compared)

    lr = DiMConfig.lr
    for part in ("model.safetensors", "model_1.safetensors"):  # generator, critic
        assert largest_difference("global", part) < lr / 100
        assert largest_difference("own", part) > lr / 2


def test_shipped_checkpoint_samples_without_arguments(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["sample", "--inpc", "50", "--format", "npz"]) == 0
    from gencond.artifacts import CondensedSet

    drawn = CondensedSet.load(tmp_path / "samples" / "inpc50.npz")
    assert drawn.images_per_class().tolist() == [50] * 10 and drawn.info.name == "digits"


def test_ema_generator_is_saved_and_checkpointed(tmp_path):
    folder = train_dim(replace(TINY, output_dir=str(tmp_path), match_epochs=0, ema_decay=0.5))
    assert (tmp_path / "state" / "custom_checkpoint_1.pkl").is_file()  # the EMA state travels with save_state

    ema_weights = weights(folder)
    raw = train_dim(replace(TINY, output_dir=str(tmp_path / "raw"), match_epochs=0))
    raw_weights = weights(raw)
    assert any(not torch.equal(ema_weights[k], raw_weights[k]) for k in raw_weights if "running" not in k)


def test_pool_network_trains_with_its_own_augmentation():
    from gencond.data import load_dataset
    from gencond.methods.dim import PoolTrainer

    train = load_dataset("digits").train
    cfg = replace(TINY, dsa_strategy="color_crop_cutout", pool_training=RealBatchConfig(dsa_strategy="color_crop"))
    pool = PoolTrainer(cfg, train, epoch=1, generator=torch.Generator().manual_seed(0), device="cpu")
    assert pool.trainer.augment.ops == ["color", "crop"]
    with pytest.raises(GencondError, match="unknown DSA operation"):
        replace(TINY, pool_training=RealBatchConfig(dsa_strategy="color_blur")).check()


def test_cost_model_counts_both_phases_and_projects(tmp_path):
    """Phase 2 runs everything phase 1 does plus pool training and matching: more FLOPs."""
    out = tmp_path / "cost.json"
    cmd = [*driver("experiments.imagenet_cost.cost_model"), "--method", "dim", "--config",
           str(ROOT / "configs" / "dim" / "digits.yaml"), "--set", "width=8", "--set", "pool_training.batches=1",
           "--steps", "1", "--train-images", "6400", "--gpus", "1", "2", "--variants", "bf16", "--work-dir",
           str(tmp_path / "run"), "--json", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, env=driver_env())
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    phase1, phase2 = report["phases"]["1"]["tflops_per_step"], report["phases"]["2"]["tflops_per_step"]
    assert 0 < phase1 < phase2
    one, two = [p for p in report["projection"] if p["phase"] == 1]
    assert one["steps_per_epoch"] == 100 and two["steps_per_epoch"] == 50  # 6400 images, batch 64 per process
    assert two["hours_per_epoch"] == pytest.approx(one["hours_per_epoch"] / 2)
    assert report["allreduce_bytes_per_step"] == 4 * sum(report["synchronised_parameters"].values()) > 0
    rates = report["cpu_flops_per_s"]  # any CPU multiplies and convolves at > 1 GFLOP/s; the floor takes the faster
    assert set(rates) == {"matmul", "conv"} and min(rates.values()) > 1e9
    assert report["floor_flops_per_s"] == max(rates.values())
    assert report["phases"]["1"]["images_read"] == [64]  # the real batch of one timed step
    assert report["phases"]["2"]["images_read"][0] > 64  # plus pool training and matching batches
    bf16 = report["step_time_variants"]
    assert [(r["variant"], r["phase"], len(r["cpu_seconds"])) for r in bf16] == [("bf16", 1, 1), ("bf16", 2, 1)]
    assert all(r["ratio_to_fp32"] > 0 for r in bf16)
    # the bf16 run says so exactly where this CPU lacks native bf16
    assert ("warning: mixed_precision bf16" in result.stdout) == (slow_precision_warning("bf16", torch.device("cpu")) is not None)
    machine = report["machine"]
    assert machine["cpu_model"] and set(machine["cpu_flags"]) <= set(CPU_FLAGS) and machine["torch_cpu_capability"]


def test_a_compiled_generator_takes_the_eager_steps_and_saves_the_same_names(trained, tmp_path):
    """aot_eager traces the generator into graphs without generating code: the same
    arithmetic, so the weights match the eager run's to float tolerance."""
    compiled = weights(train_dim(replace(TINY, output_dir=str(tmp_path), compile="aot_eager")))
    eager = weights(trained[0])
    assert compiled.keys() == eager.keys()
    for key in eager:
        torch.testing.assert_close(compiled[key], eager[key], atol=1e-4, rtol=1e-4, msg=key)
    with pytest.raises(GencondError, match="compile must be no or a torch.compile backend"):
        replace(TINY, compile="nope").check()


def cpu_with_flags(monkeypatch, *flags):
    """This process's CPU as one with ``flags`` (none: flags unreadable, oneDNN's check decides)."""
    import gencond.runtime

    monkeypatch.setattr(gencond.runtime, "cpu_description", lambda: {"cpu_flags": list(flags)})


def test_bf16_on_a_cpu_without_native_bf16_is_flagged_and_nowhere_else(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)  # oneDNN: yes for any AVX-512
    cpu_with_flags(monkeypatch, "avx2", "avx512f")
    line = slow_precision_warning("bf16", cpu)
    assert line.startswith("warning: mixed_precision bf16") and "\n" not in line
    assert slow_precision_warning("no", cpu) is None and slow_precision_warning("bf16", cuda) is None
    cpu_with_flags(monkeypatch, "avx512f", "avx512_bf16")
    assert slow_precision_warning("bf16", cpu) is None


def test_auto_precision_is_bf16_exactly_where_the_device_runs_it_natively(monkeypatch):
    cpu = torch.device("cpu")
    for flags, expected in ((("avx512f", "avx512_bf16"), "bf16"), (("avx2", "amx_bf16"), "bf16"),
                            (("avx2", "avx512f"), "no")):
        cpu_with_flags(monkeypatch, *flags)
        assert resolve_precision("auto", cpu) == expected
        assert resolve_precision("no", cpu) == "no" and resolve_precision("bf16", cpu) == "bf16"
    cpu_with_flags(monkeypatch)  # no flags to read: oneDNN's check
    for native, expected in ((True, "bf16"), (False, "no")):
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda native=native: native)
        assert resolve_precision("auto", cpu) == expected
    emulation = []
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: emulation.append(
        including_emulation) or not including_emulation)
    assert resolve_precision("auto", torch.device("cuda")) == "bf16" and emulation == [False]
    replace(TINY, mixed_precision="auto").check()
    with pytest.raises(GencondError, match="mixed_precision fp16 is for evaluation networks"):
        replace(TINY, mixed_precision="fp16").check()
    with pytest.raises(GencondError, match="mixed_precision must be one of no, bf16, fp16, auto"):
        replace(TINY, mixed_precision="fp32").check()


@pytest.mark.slow
def test_schedule_benchmark_trains_dim_variants_and_scores_them_on_the_validation_split(tmp_path):
    out = tmp_path / "out.json"
    result = subprocess.run([
        sys.executable, "-m", "gencond", "sweep", "dim",
        "--config", str(ROOT / "configs" / "dim" / "digits.yaml"), "--variant", "GAN only={}",
        "--variant", "with matching={match_epochs: 1}", "--work-dir", str(tmp_path / "runs"), "--inpc", "1",
        "--seeds", "1", "--eval-epochs", "1", "--validation-per-class", "5", "--no-real", "--json", str(out),
        "--set", "gan_epochs=1", "--set", "match_epochs=0", "--set", "steps_per_epoch=1", "--set", "width=8",
        "--set", "pool_training.batches=1"], capture_output=True, text=True, check=False, cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["benchmark"] == "dim_sweep" and report["validation_images"] == 50
    assert [row["training_set"] for row in report["results"]] == ["GAN only", "with matching"]
    assert report["configs"]["with matching"]["match_epochs"] == 1
    assert report["configs"]["GAN only"]["match_epochs"] == 0
    assert all(seconds > 0 for seconds in report["train_seconds"].values())
