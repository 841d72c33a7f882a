import argparse

import pytest

from gencond.config import (
    add_config_arguments,
    build_config,
    check_reused,
    config_from_dict,
)
from gencond.errors import GencondError
from gencond.evaluate import EvalConfig


def parse(argv, config=None):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, EvalConfig)
    return build_config(EvalConfig, parser.parse_args(argv), config)


def test_defaults_are_the_dc_evaluation_setting():
    cfg = parse([])
    assert (cfg.train.lr, cfg.train.momentum, cfg.train.weight_decay) == (0.01, 0.9, 5e-4)
    assert (cfg.train.batch_size, cfg.train.epochs, cfg.train.schedule, cfg.train.augment) == (256, 1000, "step", "dsa")
    assert cfg.dataset == "digits" and cfg.arch == ["convnet3"]


def test_yaml_then_flags(tmp_path):
    path = tmp_path / "eval.yaml"
    path.write_text("dataset: mnist\nipc: [1, 10]\ntrain:\n  epochs: 300\n  lr: 0.02\n")
    cfg = parse(["--epochs", "50", "--ipc", "5", "--no-download"], path)
    assert cfg.dataset == "mnist" and cfg.ipc == [5]
    assert cfg.train.epochs == 50 and cfg.train.lr == 0.02 and cfg.train.momentum == 0.9


def test_unknown_keys_and_bad_types_are_clear(tmp_path):
    with pytest.raises(GencondError, match="unknown key"):
        config_from_dict(EvalConfig, {"epochz": 3})
    with pytest.raises(GencondError, match="expected int"):
        config_from_dict(EvalConfig, {"seeds": "three"})
    with pytest.raises(GencondError, match="no config file"):
        parse([], tmp_path / "missing.yaml")


def test_yaml_reads_no_as_a_word_and_only_true_false_as_booleans(tmp_path):
    from gencond.config import config_with_sets, load_yaml, parse_variant, parse_yaml
    from gencond.methods.dim import DiMConfig

    assert [parse_yaml(word) for word in ("no", "yes", "off", "On", "true", "False", "0.5")] == [
        "no", "yes", "off", "On", True, False, 0.5]
    path = tmp_path / "dim.yaml"
    path.write_text("mixed_precision: no\nvalidation_per_class: 5\n")
    assert load_yaml(path)["mixed_precision"] == "no"
    cfg = config_with_sets(DiMConfig, str(path), ["mixed_precision=no", "sample_every=0"])
    assert (cfg.mixed_precision, cfg.sample_every) == ("no", 0)
    assert config_with_sets(DiMConfig, str(path), ["mixed_precision=bf16"]).mixed_precision == "bf16"
    assert parse_variant("fp32={mixed_precision: no, nested: true}") == ("fp32", {"mixed_precision": "no", "nested": True})


def test_check_reused_names_every_differing_field_and_reads_stored_lists_as_tuples():
    from dataclasses import asdict

    cfg = EvalConfig(arch=("convnet3", "mlp"), device="cpu")
    stored = {**asdict(cfg), "arch": ["convnet3", "mlp"], "device": "cuda", "method": "dm"}  # as JSON keeps it
    check_reused(stored, cfg, "set.safetensors", ignore=("device",), method="dm")  # the same config
    with pytest.raises(GencondError, match=r"^set.safetensors was made with another device, method dm: remove it"):
        check_reused(stored, cfg, "set.safetensors", method="dsa")
    older = {key: value for key, value in stored.items() if key != "seeds"}  # a field an older version lacked
    with pytest.raises(GencondError, match=r"another seeds: "):
        check_reused(older, cfg, "set.safetensors", ignore=("device",), method="dm")
    with pytest.raises(GencondError, match=r"^set.safetensors has no config record to compare"):
        check_reused(None, cfg, "set.safetensors")
    with pytest.raises(GencondError, match=r"another arch, seeds, train: "):
        check_reused({**stored, "seeds": 1, "arch": ["mlp"], "train": {}}, cfg, "set.safetensors", ignore=("device",),
                     method="dm")


def test_shipped_eval_configs_parse():
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parents[1] / "configs" / "eval").glob("*.yaml")):
        cfg = parse([], path)
        assert cfg.train.epochs > 0 and cfg.arch


def test_shipped_dim_configs_parse_and_check():
    from pathlib import Path

    from gencond.config import load_yaml
    from gencond.methods.dim import DiMConfig

    paths = sorted((Path(__file__).resolve().parents[1] / "configs" / "dim").glob("*.yaml"))
    names = {p.stem for p in paths}
    assert {"mnist", "fashion_mnist", "svhn", "cifar10", "cifar100", "imagenet", "mnist_subset",
            "cifar10_subset", "digits"} <= names
    precisions = {}
    for path in paths:
        cfg = config_from_dict(DiMConfig, load_yaml(path), str(path))
        cfg.check()
        assert cfg.match_weight == 0.01
        precisions[path.stem] = cfg.mixed_precision
    # the paper-scale configs train fp32 (ImageNet bf16, for GPUs); the MNIST subset, measured level in bf16, takes auto
    assert precisions == {**dict.fromkeys(names, "no"), "imagenet": "bf16", "mnist_subset": "auto"}
    paper = config_from_dict(DiMConfig, load_yaml(paths[0].parent / "cifar10.yaml"))
    assert (paper.width, paper.noise_dim, paper.batch_size, paper.gan_epochs, paper.gp_weight) == (196, 100, 64, 120, 10.0)
    assert paper.pool == ["convnet3", "resnet10_cifar", "resnet18_cifar"] and paper.match == "logits"


def test_shipped_dm_configs_take_bf16_only_where_it_was_measured_level():
    from pathlib import Path

    from gencond.config import load_yaml
    from gencond.methods.dm import DMConfig

    paths = sorted((Path(__file__).resolve().parents[1] / "configs" / "dm").glob("*.yaml"))
    precisions = {p.stem: config_from_dict(DMConfig, load_yaml(p)).mixed_precision for p in paths}
    # the paper-scale configs run fp32; digits, the MNIST subset and the CIFAR-10 subset measured level in bf16
    assert precisions == {"cifar10": "no", "mnist": "no", "digits": "auto", "mnist_subset": "auto",
                          "cifar10_subset": "auto"}


def test_every_shipped_yaml_parses_into_its_config_and_passes_its_checks():
    from pathlib import Path

    from gencond.config import load_yaml
    from gencond.evaluate import EvalConfig
    from gencond.evaluate.bench import BenchConfig
    from gencond.methods import get_method
    from gencond.methods.coresets import SelectionConfig

    special = {"eval": EvalConfig, "coresets": SelectionConfig, "bench": BenchConfig}
    paths = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*/*.yaml"))
    assert len(paths) > 30
    for path in paths:
        folder = path.parent.name
        if folder == "accelerate":  # Accelerate's own launch configs
            from accelerate.commands.config.config_args import ClusterConfig
            from accelerate.utils import DistributedType

            launch = ClusterConfig.from_yaml_file(str(path))  # the torchrun-based launcher, no mpirun
            assert launch.num_processes >= 2 and launch.distributed_type == DistributedType.MULTI_GPU
            assert not launch.use_cpu
            continue
        cls = special.get(folder) or get_method(folder).config
        cfg = config_from_dict(cls, load_yaml(path), str(path))
        if hasattr(cfg, "check") and folder != "eval":
            cfg.check()


def test_codebook_configs_keep_the_paper_settings():
    from pathlib import Path

    from gencond.config import load_yaml
    from gencond.methods.codebook import CodebookConfig

    folder = Path(__file__).resolve().parents[1] / "configs" / "codebook"
    assert {"mnist", "fashion_mnist", "svhn", "cifar10", "cifar100", "imagenet", "mnist_subset", "cifar10_subset",
            "digits"} <= {p.stem for p in folder.glob("*.yaml")}
    paper = config_from_dict(CodebookConfig, load_yaml(folder / "cifar10.yaml"))
    assert (paper.lr_codebook, paper.lr_generator, paper.phi_training.lr) == (0.01, 0.001, 0.01)
    assert paper.class_embedding == "class_feature" and paper.phi_pool == ["convnet3"] and not paper.soft_labels
    imagenet = config_from_dict(CodebookConfig, load_yaml(folder / "imagenet.yaml"))
    assert imagenet.soft_labels and imagenet.phi_pool == ["convnet4"] and imagenet.image_size == 64
    # fp32 as the paper, ImageNet bf16 for GPUs; digits and the MNIST subset measured level in bf16 take auto
    precisions = {p.stem: config_from_dict(CodebookConfig, load_yaml(p)).mixed_precision for p in folder.glob("*.yaml")}
    assert precisions == {**dict.fromkeys(precisions, "no"), "imagenet": "bf16", "digits": "auto", "mnist_subset": "auto"}


def test_renamed_keys_are_refused_in_one_line_naming_the_new_key(tmp_path, cli_error, capsys):
    from gencond.cli import main
    from gencond.errors import GencondError
    from gencond.evaluate import EvalConfig
    from gencond.methods.dm import DMConfig

    with pytest.raises(GencondError, match="config: real_mixed_precision was renamed mixed_precision"):
        config_from_dict(DMConfig, {"real_mixed_precision": "no"})
    with pytest.raises(GencondError, match="config.train: bf16 was renamed mixed_precision"):
        config_from_dict(EvalConfig, {"train": {"bf16": True}})
    old = tmp_path / "old.yaml"
    old.write_text("iterations: 1\nreal_mixed_precision: auto\n")
    cli_error(["condense", "dm", "--config", old], "real_mixed_precision was renamed mixed_precision")
    for argv, message in ((["condense", "dm", "--real-mixed-precision", "no"], "--real-mixed-precision was renamed "
                           "--mixed-precision"), (["eval", "--bf16"], "--bf16 was renamed --mixed-precision"),
                          (["bench", "--no-bf16"], "--no-bf16 was renamed --mixed-precision"),
                          (["eval", "--train.bf16"], "--train.bf16 was renamed --mixed-precision")):
        with pytest.raises(SystemExit) as exit_:  # argparse's own error: one line, exit status 2
            main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("\n") == 1 and message in err, err


def test_repeated_list_flags_add_up():
    from gencond.methods.sweep import SweepConfig

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, SweepConfig)
    args = parser.parse_args(["--variant", "a={}", "--variant", "b={lr: 1}", "--inpc", "1", "10", "--set", "x=1"])
    cfg = build_config(SweepConfig, args)
    assert cfg.variant == ["a={}", "b={lr: 1}"] and cfg.inpc == [1, 10] and cfg.set == ["x=1"]
