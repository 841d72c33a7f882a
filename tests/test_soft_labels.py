"""Soft labels: the KL loss, a teacher's logits stored with sampled sets and yielded by
GeneratorDataset, and the evaluation's soft and relabel modes."""

import math

import pytest
import torch

from gencond.artifacts import CondensedSet
from gencond.cli import main
from gencond.cli.sample_cmd import SHIPPED
from gencond.engine.networks import (
    IndexedData,
    soft_label_loss,
    target_loss,
    train_network,
)
from gencond.engine.sampling import Teacher
from gencond.errors import GencondError
from gencond.evaluate import EvalConfig, TrainConfig, run_eval
from gencond.evaluate.protocol import RowResult, format_table
from gencond.models import create_network, load_generator
from gencond.serve import GeneratorDataset, sample_set


def test_soft_label_loss_is_zero_for_the_teachers_own_logits_and_the_closed_form_otherwise():
    teacher = torch.tensor([[2.0, -1.0, 0.5]])
    assert soft_label_loss(teacher, teacher).item() == pytest.approx(0.0, abs=1e-7)
    # Teacher uniform over two classes, student 3:1: KL = 0.5 ln(0.5/0.75) + 0.5 ln(0.5/0.25).
    uniform, student = torch.zeros(1, 2), torch.tensor([[math.log(3.0), 0.0]])
    assert soft_label_loss(student, uniform).item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-6)
    # At T = 2 both logits are halved and the KL is scaled by T^2 = 4.
    p = 1 / (1 + 3 ** -0.5)  # softmax([ln 3 / 2, 0])[0]
    expected = 4 * (0.5 * math.log(0.5 / p) + 0.5 * math.log(0.5 / (1 - p)))
    assert soft_label_loss(student, uniform, temperature=2.0).item() == pytest.approx(expected, rel=1e-6)


def test_target_loss_is_cross_entropy_for_indices_and_kl_for_logits():
    logits = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    assert target_loss(logits, torch.tensor([1, 0])).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, torch.tensor([1, 0])).item())
    assert target_loss(logits, logits.clone()).item() == pytest.approx(0.0, abs=1e-7)


class ConstantTeacher(torch.nn.Module):
    """Logits that always favour class 0, whatever the image; records what it was shown."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(num_classes))
        self.bias.data[0] = 5.0
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.bias.expand(len(x), -1)


def test_relabel_trains_on_the_teachers_labels_of_each_augmented_view(digits):
    x, y = digits.train.batch(torch.arange(60))
    teacher = ConstantTeacher()
    torch.manual_seed(0)
    net = create_network("convnet3", 10, 1, 32, width=16)
    train_network(net, IndexedData.from_tensors(x, y), TrainConfig(epochs=6, lr=0.05), torch.device("cpu"), 0, teacher)
    # the teacher labelled each of the 6 batches after augmentation (DSA): mostly views, not stored images
    assert [len(batch) for batch in teacher.seen] == [60] * 6
    stored = sum(any(torch.equal(v, image) for image in x) for batch in teacher.seen for v in batch)
    assert stored < 0.5 * 360
    net.eval()
    with torch.no_grad():
        assert (net(digits.test.batch(torch.arange(200))[0]).argmax(1) == 0).float().mean() > 0.9


def fake_teacher():
    torch.manual_seed(1)
    return Teacher(create_network("convnet3", 10, 1, 32, width=16).eval(), {"network": "convnet3", "epochs": 0})


def test_sampled_sets_store_the_teachers_logits_and_the_dataset_yields_them():
    generator, teacher = load_generator(SHIPPED), fake_teacher()
    condensed = sample_set(generator, 3, seed=2, teacher=teacher)
    with torch.no_grad():
        torch.testing.assert_close(condensed.soft_labels, teacher.net(condensed.images))
    assert condensed.config["teacher"] == {"network": "convnet3", "epochs": 0}
    dataset = GeneratorDataset(generator, inpc=3, seed=2, batch_size=7, teacher=teacher)
    items = [dataset[i] for i in range(len(dataset))]
    torch.testing.assert_close(torch.stack([item[2] for item in items]), condensed.soft_labels)
    assert [item[1] for item in items] == condensed.labels.tolist()
    assert len(GeneratorDataset(generator, inpc=1)[0]) == 2  # without a teacher: (image, label)


def test_soft_labels_survive_multi_formation_decoding():
    info = load_generator(SHIPPED).info
    soft = torch.randn(2, 10)
    condensed = CondensedSet(torch.zeros(2, 1, 32, 32), torch.tensor([0, 1]), info, soft, factor=2)
    images, targets = condensed.decoded(soft=True)
    assert images.shape == (8, 1, 32, 32) and torch.equal(targets, soft.repeat(4, 1))
    with pytest.raises(GencondError, match="without a teacher"):
        CondensedSet(torch.zeros(2, 1, 32, 32), torch.tensor([0, 1]), info).decoded(soft=True)


def test_label_modes_are_separate_columns():
    rows = [RowResult("random", 1, "convnet3", [50.0], [1.0]), RowResult("random", 1, "convnet3", [70.0], [1.0], "soft")]
    header = [c.strip() for c in format_table(rows).splitlines()[0].split(" | ")]
    assert header == ["training set", "images/class", "convnet3", "convnet3, soft labels"]
    assert rows[1].to_dict()["labels"] == "soft"


def test_eval_trains_a_teacher_for_soft_and_relabel_modes(capsys):
    cfg = EvalConfig(dataset="digits", ipc=[2], seeds=1, labels=["hard", "soft", "relabel"], teacher_epochs=1,
                     train=TrainConfig(epochs=2))
    report = run_eval(cfg)
    assert [r["labels"] for r in report["results"]] == ["hard", "soft", "relabel"]
    assert report["teacher"]["epochs"] == 1 and 0 <= report["teacher"]["test_accuracy"] <= 100
    assert "convnet3, relabel labels" in capsys.readouterr().out


def test_cli_writes_soft_labels_and_eval_refuses_soft_labels_of_a_set_without_them(tmp_path, capsys):
    soft, plain = tmp_path / "soft.safetensors", tmp_path / "plain.safetensors"
    assert main(["sample", "--inpc", "1", "--soft-labels", "--teacher-epochs", "0", "--checkpoint", str(SHIPPED),
                 "--format", "safetensors", "--out", str(soft)]) == 0
    assert "with the teacher's soft labels" in capsys.readouterr().out
    assert CondensedSet.load(soft).soft_labels.shape == (10, 10)
    assert main(["sample", "--inpc", "1", "--checkpoint", str(SHIPPED), "--format", "safetensors", "--out", str(plain)]) == 0
    capsys.readouterr()
    for argv, message in (
        (["eval", "--dataset", "digits", "--condensed", str(plain), "--labels", "soft", "--seeds", "1"], "without a teacher"),
        (["eval", "--dataset", "digits", "--labels", "kd", "--seeds", "1"], "unknown label mode 'kd'"),
        (["eval", "--dataset", "digits", "--labels", "soft", "--teacher-arch", "nope"], "nope"),
        (["sample", "--inpc", "1", "--soft-labels", "--checkpoint", str(SHIPPED), "--out", str(tmp_path / "png")],
         "PNG folders cannot hold them"),
    ):
        assert main(argv) == 2
        error = capsys.readouterr().err.strip()
        assert message in error and "\n" not in error
