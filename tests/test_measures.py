"""Per-run measurements for the claims (measures.py): each figure checked against a case
whose answer is known, and their place in metrics.json (the mean, and each seed's own)."""

import pytest
import torch
import torch.nn.functional as F
from conftest import MNIST
from torch import nn

from cnnlab import measures
from cnnlab.config import LeNetConfig, MLPConfig
from cnnlab.measures import (
    TRAIN_SAMPLE,
    GradProbe,
    dead_units,
    mean_of,
    shift,
    train_sample,
    weight_names,
)
from cnnlab.models import build_model
from tests.conftest import QUICK, cnnlab_train, metrics_of

KEYS = ("shift_accuracy", "dead_units", "grad_ratio", "epoch1_accuracy", "generalization_gap")


def test_shift_moves_right_and_down_with_zeros():
    x = torch.arange(1, 10).reshape(1, 1, 3, 3)
    assert shift(x, 1).tolist() == [[[[0, 0, 0], [0, 1, 2], [0, 4, 5]]]]
    assert torch.equal(shift(x, 0), x)
    assert shift(x, 3).sum() == 0
    series = torch.tensor([[[1, 2, 3, 4]]])
    assert shift(series, 2).tolist() == [[[0, 0, 1, 2]]]


def test_forced_dead_relus_read_one_and_live_ones_zero():
    model = build_model(LeNetConfig(), MNIST, 10)
    first, second = model.features[0][0][0], model.features[2][0][0]
    with torch.no_grad():
        first.weight.zero_()
        first.bias.fill_(-1.0)  # every unit of the first ReLU sees -1: never positive
        second.weight.zero_()
        second.bias.fill_(1.0)  # every unit of the second sees +1: always positive
    dead = dead_units(model, torch.randn(50, *MNIST), batch_size=16)
    assert dead["features.0.0.1"] == 1.0
    assert dead["features.2.0.1"] == 0.0
    assert set(dead) == {"features.0.0.1", "features.2.0.1", "classifier.2", "classifier.4"}
    assert model.training  # the mode it was in comes back


def test_dead_units_count_each_unit_once_over_the_batches():
    # one dense layer of 4 units on inputs that make units 0 and 1 positive only in the
    # second batch, unit 2 never, unit 3 always: one in four never positive
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(4))
        model[0].bias.zero_()
    x = torch.tensor([[-1.0, -1.0, -1.0, 1.0], [1.0, 2.0, -1.0, 1.0]])
    assert dead_units(model, x, batch_size=1) == {"1": 0.25}


def test_grad_ratio_of_a_single_layer_is_one():
    model = build_model(MLPConfig(hidden=[]), MNIST, 10)
    assert weight_names(model) == ("net.1.weight", "net.1.weight")
    probe = GradProbe(model, weight_names(model), copies=1)
    step = probe.wrap(lambda idx: one_step(model, idx))
    step(torch.arange(8))
    assert probe.ratios() == [pytest.approx(1.0)]


def one_step(model, idx):
    torch.manual_seed(1)
    x, y = torch.randn(8, *MNIST), torch.arange(8) % 10
    model.zero_grad()
    loss = F.cross_entropy(model(x[idx]), y[idx])
    loss.backward()
    return loss


def test_grad_ratio_is_the_ratio_of_the_summed_norms():
    torch.manual_seed(0)
    model = build_model(LeNetConfig(), MNIST, 10)
    first, last = (dict(model.named_parameters())[n] for n in weight_names(model))
    assert first.shape == (6, 1, 5, 5) and last.shape == (10, 84)
    probe = GradProbe(model, weight_names(model), copies=1, steps=2)
    step = probe.wrap(lambda idx: one_step(model, idx))
    sums = torch.zeros(2)
    for i, idx in enumerate((torch.arange(8), torch.arange(4), torch.arange(2))):
        step(idx)
        if i < 2:  # the third step is past the probe's 2
            sums += torch.stack([first.grad.norm(), last.grad.norm()])
    assert probe.taken == 2
    assert probe.ratios() == [pytest.approx(float(sums[0] / sums[1]))]


def test_mean_of_copies_per_key_shift_and_layer():
    rows = [
        {"grad_ratio": 1.0, "shift_accuracy": {"0": 0.5}, "dead_units": {"a": 0.0}},
        {},  # a diverged copy
        {"grad_ratio": 3.0, "shift_accuracy": {"0": 0.7}, "dead_units": {"a": 1.0}},
    ]
    assert mean_of(rows) == {
        "grad_ratio": 2.0,
        "shift_accuracy": {"0": pytest.approx(0.6)},
        "dead_units": {"a": 0.5},
    }


def check_measured(row: dict, epochs: int):
    assert set(row["shift_accuracy"]) == {"0", "1", "2", "3", "4"}
    assert row["shift_accuracy"]["0"] == pytest.approx(row["accuracy"])  # the test set
    assert all(0 <= v <= 1 for v in row["shift_accuracy"].values())
    assert all(0 <= v <= 1 for v in row["dead_units"].values())
    assert row["grad_ratio"] > 0
    assert row["generalization_gap"] == pytest.approx(row["train_accuracy"] - row["accuracy"])
    assert (row["epoch1_accuracy"] is None) == (epochs == 0)


def test_a_run_records_each_measurement(tmp_path):
    assert cnnlab_train(tmp_path / "run", *QUICK, "trainer.epochs=2") == 0
    metrics = metrics_of(tmp_path / "run")
    check_measured(metrics, 2)
    history_first = metrics["per_seed"][0]["epoch1_accuracy"]
    assert history_first == metrics["epoch1_accuracy"]
    assert list(metrics["dead_units"]) == ["features.0.0.1", "features.2.0.1",
                                           "classifier.2", "classifier.4"]  # fmt: skip


def test_each_seed_has_its_own_and_the_run_their_mean(tmp_path):
    assert cnnlab_train(tmp_path / "run", *QUICK, "model=mlp", "seeds=3") == 0
    metrics = metrics_of(tmp_path / "run")
    rows = metrics["per_seed"]
    for row in rows:
        check_measured(row, 1)
    assert len({row["grad_ratio"] for row in rows}) == 3  # each copy its own
    for key in ("grad_ratio", "generalization_gap", "epoch1_accuracy"):
        assert metrics[key] == pytest.approx(sum(row[key] for row in rows) / 3)
    for k in "01234":
        mean = sum(row["shift_accuracy"][k] for row in rows) / 3
        assert metrics["shift_accuracy"][k] == pytest.approx(mean)


def test_a_seed_of_a_stack_measures_as_that_seed_alone(tmp_path):
    assert cnnlab_train(tmp_path / "one", *QUICK, "seed=1") == 0
    assert cnnlab_train(tmp_path / "two", *QUICK, "seeds=2") == 0
    alone, stacked = metrics_of(tmp_path / "one"), metrics_of(tmp_path / "two")["per_seed"][1]
    for key in ("grad_ratio", "generalization_gap", "epoch1_accuracy"):
        assert stacked[key] == pytest.approx(alone[key], rel=1e-3, abs=1e-3)
    assert stacked["shift_accuracy"] == pytest.approx(alone["shift_accuracy"], abs=1e-2)


def test_zero_epochs_and_a_validation_split(tmp_path):
    assert cnnlab_train(tmp_path / "zero", *QUICK, "trainer.epochs=0") == 0
    metrics = metrics_of(tmp_path / "zero")
    assert metrics["grad_ratio"] is None and metrics["epoch1_accuracy"] is None
    assert metrics["shift_accuracy"]["0"] == pytest.approx(metrics["accuracy"])
    assert cnnlab_train(tmp_path / "val", *QUICK, "data.val_fraction=0.25") == 0
    metrics = metrics_of(tmp_path / "val")
    assert metrics["epoch1_accuracy"] is None  # history holds validation figures only
    assert metrics["grad_ratio"] > 0


def test_a_resumed_run_has_no_grad_ratio_of_its_own(tmp_path):
    # its first steps are the first run's: they are long past, so it does not claim them
    assert cnnlab_train(tmp_path / "a", *QUICK) == 0
    assert metrics_of(tmp_path / "a")["grad_ratio"] > 0
    resumed = cnnlab_train(tmp_path / "b", *QUICK, "trainer.epochs=2", f"resume={tmp_path / 'a'}")
    assert resumed == 0
    metrics = metrics_of(tmp_path / "b")
    assert metrics["grad_ratio"] is None and metrics["epochs_completed"] == 2
    assert metrics["shift_accuracy"]["0"] == pytest.approx(metrics["accuracy"])


def test_a_run_takes_only_the_measurements_it_names(tmp_path):
    """config `measures` (issue 31: the ledger's cost): what is not named is not measured,
    so its passes over the data are not paid; grad_ratio and epoch1_accuracy are free."""
    assert cnnlab_train(tmp_path / "none", *QUICK, "seeds=2", "measures=[]") == 0
    metrics = metrics_of(tmp_path / "none")
    for row in (metrics, *metrics["per_seed"]):
        assert row.get("shift_accuracy") is None and row.get("dead_units") is None
        assert row.get("train_accuracy") is None and row.get("generalization_gap") is None
        assert row["grad_ratio"] > 0 and row["epoch1_accuracy"] is not None
    assert cnnlab_train(tmp_path / "shift", *QUICK, "measures=[shift_accuracy]") == 0
    metrics = metrics_of(tmp_path / "shift")
    assert set(metrics["shift_accuracy"]) == set("01234") and metrics["dead_units"] is None


def test_an_unknown_measurement_is_bad_input(tmp_path, capsys):
    assert cnnlab_train(tmp_path / "bad", *QUICK, "measures=[dead]") == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "measures" in err and "'dead'" in err
    assert "dead_units" in err and not (tmp_path / "bad").exists()


def test_train_accuracy_reads_a_fixed_sample_of_the_training_set(tmp_path, monkeypatch):
    """The generalisation gap's train accuracy on TRAIN_SAMPLE images, not a whole pass over
    MNIST's 60,000: the same images in every run, and metrics.json says how many."""
    assert train_sample(50).tolist() == list(range(50))  # a small training set: all of it
    picked = train_sample(3 * TRAIN_SAMPLE)
    assert len(picked) == len(set(picked.tolist())) == TRAIN_SAMPLE
    assert torch.equal(picked, train_sample(3 * TRAIN_SAMPLE))  # the same every run
    assert picked.max() > TRAIN_SAMPLE  # drawn over the whole set, not its first images
    monkeypatch.setattr(measures, "TRAIN_SAMPLE", 40)
    assert cnnlab_train(tmp_path / "run", *QUICK, "seeds=2") == 0
    metrics = metrics_of(tmp_path / "run")
    for row in (metrics, *metrics["per_seed"]):
        assert row["train_accuracy_images"] == 40
        assert row["train_accuracy"] * 40 == pytest.approx(round(row["train_accuracy"] * 40))
