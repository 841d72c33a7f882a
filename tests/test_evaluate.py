import pytest
import torch

from gencond.engine.networks import _lr_factor
from gencond.evaluate import IndexedData, TrainConfig, cutmix, train_and_test
from gencond.evaluate.protocol import RowResult, format_table
from gencond.methods.coresets import random_selection
from gencond.models import create_network


def test_step_schedule_decays_after_half_and_cosine_ends_at_zero():
    step = TrainConfig(epochs=10)
    assert [_lr_factor(step, e) for e in range(10)] == [1.0] * 5 + [0.1] * 5
    cosine = TrainConfig(epochs=10, schedule="cosine")
    assert _lr_factor(cosine, 0) == 1.0 and abs(_lr_factor(cosine, 10)) < 1e-12


def test_cutmix_pastes_a_box_and_weights_by_its_area():
    x = torch.zeros(4, 1, 8, 8)
    x[torch.arange(4), 0] = torch.arange(4.0).view(4, 1, 1)  # image i is filled with value i
    targets = torch.arange(4)
    mixed, t_a, t_b, lam = cutmix(x, targets, beta=1.0, generator=torch.Generator().manual_seed(1))
    for i in range(4):
        foreign = (mixed[i] != i).float().mean().item() if t_b[i] != i else None
        if foreign is not None:
            assert abs(foreign - (1 - lam)) < 1e-6
        assert set(mixed[i].unique().tolist()) <= {float(i), float(t_b[i])}
    assert torch.equal(t_a, targets) and sorted(t_b.tolist()) == [0, 1, 2, 3]


def fit(digits, seed, best_every=0, **cfg):
    idx = random_selection(digits.train, 10, seed=0)
    data = IndexedData.from_tensors(*digits.train.batch(idx))
    return train_and_test(lambda: create_network("convnet3", 10, 1, 32, width=32), data, digits.test,
                          TrainConfig(**cfg), torch.device("cpu"), seed, best_every=best_every)


def test_training_on_ten_digits_per_class_beats_chance_by_far(digits):
    acc, seconds, best = fit(digits, 0, epochs=40)
    assert acc > 60.0 and seconds > 0 and best is None


def test_best_over_training_is_the_highest_test_and_leaves_the_final_accuracy_alone(digits, monkeypatch):
    import gencond.engine.networks as networks

    tested = []
    original = networks.test_accuracy
    monkeypatch.setattr(networks, "test_accuracy", lambda *a, **k: tested.append(original(*a, **k)) or tested[-1])
    plain = fit(digits, 3, epochs=6)
    tested.clear()
    with_best = fit(digits, 3, epochs=6, best_every=2)
    assert with_best.accuracy == plain.accuracy  # testing during training changes nothing
    assert len(tested) == 3  # epochs 2 and 4, then the final test (epoch 6)
    assert with_best.best == max(tested) >= with_best.accuracy


def test_same_seed_same_accuracy(digits):
    assert fit(digits, 1, epochs=3)[0] == fit(digits, 1, epochs=3)[0]


def test_soft_labels_and_cutmix_train(digits):
    idx = random_selection(digits.train, 5, seed=0)
    x, y = digits.train.batch(idx)
    soft = torch.nn.functional.one_hot(y, 10).float() * 0.9 + 0.01
    data = IndexedData.from_tensors(x, soft)
    acc = train_and_test(lambda: create_network("convnet3", 10, 1, 32, width=16), data, digits.test,
                         TrainConfig(epochs=2, cutmix_prob=1.0), torch.device("cpu"), 0).accuracy
    assert 0.0 <= acc <= 100.0


def test_evaluation_networks_train_under_each_precision_and_fp32_is_the_default(digits):
    fp32 = fit(digits, 2, epochs=2)[0]
    assert fit(digits, 2, epochs=2, mixed_precision="no")[0] == fp32  # "no" is exactly the default path
    for precision in ("bf16", "fp16"):  # autocast (fp16 with loss scaling) trains a network that still learns
        acc = fit(digits, 2, epochs=8, mixed_precision=precision).accuracy
        assert 20.0 < acc <= 100.0, (precision, acc)


@pytest.mark.parametrize("field,value", [("schedule", "linear"), ("augment", "mixup"), ("epochs", 0),
                                         ("mixed_precision", "fp32")])
def test_bad_training_options_are_refused(field, value):
    from gencond.errors import GencondError

    with pytest.raises(GencondError):
        TrainConfig(**{field: value}).check()


def test_results_table_adds_cost_columns_per_row_and_dashes_where_absent():
    rows = [RowResult("random", 1, "convnet3", [50.0, 60.0], [1.0, 3.0]),
            RowResult("DM", 1, "convnet3", [80.0, 80.0], [2.0, 2.0])]
    table = format_table(rows, {("DM", 1): {"train s": "287", "bytes": "31,616"}}).splitlines()
    assert [c.strip() for c in table[0].split(" | ")] == ["training set", "images/class", "convnet3", "train s", "bytes"]
    assert [c.strip() for c in table[2].split(" | ")] == ["random", "1", "55.00 ± 5.00 (2 s)", "-", "-"]
    assert [c.strip() for c in table[3].split(" | ")] == ["DM", "1", "80.00 ± 0.00 (2 s)", "287", "31,616"]
    assert format_table(rows).splitlines()[0].split(" | ")[-1].strip() == "convnet3"
