"""Seeds trained together (issue 14), through the real command: copy s of a `seeds=N` run
is the run `seed=s`, and the run folder, resume, divergence and compare know the copies."""

import json
import signal

import pytest
import torch
from conftest import SMALL, cnnlab_train, history_of, metrics_of, patch_steps

from cnnlab.checkpoints import load_checkpoint
from cnnlab.compare import compare_command


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A seeds=3 run and the three single runs it stands for (LeNet-5 with batch norm,
    synthetic data, 8 steps an epoch, 2 epochs)."""
    root = tmp_path_factory.mktemp("seeds")
    common = ["model=lenet5", "model.norm=batch", *SMALL, "trainer.epochs=2"]
    assert cnnlab_train(root / "stack", *common, "seed=5", "seeds=3") == 0
    for seed in (5, 6, 7):
        assert cnnlab_train(root / f"single{seed}", *common, f"seed={seed}") == 0
    return root


def test_each_copy_is_the_run_of_its_seed(runs):
    m = metrics_of(runs / "stack")
    assert m["status"] == "completed" and m["seeds"] == [5, 6, 7]
    assert [row["seed"] for row in m["per_seed"]] == [5, 6, 7]
    history = history_of(runs / "stack")
    for row in m["per_seed"]:
        single = metrics_of(runs / f"single{row['seed']}")
        assert row["status"] == "completed"
        assert abs(row["accuracy"] - single["accuracy"]) <= 2 / 128  # a test image or two
        # the losses per epoch, to float tolerance
        mine = [h for h in history if h["seed"] == str(row["seed"])]
        theirs = history_of(runs / f"single{row['seed']}")
        for a, b in zip(mine, theirs, strict=True):
            assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), rel=1e-4)
    accuracies = [row["accuracy"] for row in m["per_seed"]]
    assert m["accuracy"] == pytest.approx(sum(accuracies) / 3)
    assert m["accuracy_std"] == pytest.approx(torch.tensor(accuracies).double().std().item())
    assert len(history) == 2 * 3  # a row per epoch and seed


def test_confusion_matrix_sums_the_copies(runs):
    rows = (runs / "stack" / "confusion_matrix.csv").read_text().strip().splitlines()[1:]
    total = sum(sum(map(int, row.split(",")[1:])) for row in rows)
    assert total == 3 * 128  # every test image, once per copy


def test_compare_shows_mean_std_and_n(runs, capsys):
    assert compare_command([runs / "stack"], fmt="json") == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["n"] == 3 and row["accuracy_%_std"] > 0


def test_a_stack_resumes_exactly_from_a_mid_epoch_interrupt(runs, tmp_path, monkeypatch):
    common = ["model=lenet5", "model.norm=batch", *SMALL, "trainer.epochs=2", "seed=5", "seeds=3"]
    with pytest.MonkeyPatch.context() as mp:  # SIGINT inside step 11: epoch 2, step 3
        patch_steps(mp, lambda state, n: n == 11 and signal.raise_signal(signal.SIGINT))
        assert cnnlab_train(tmp_path / "stopped", *common) == 130
    assert load_checkpoint(tmp_path / "stopped")["position"] == 3 * 32
    assert cnnlab_train(tmp_path / "resumed", *common, f"resume={tmp_path / 'stopped'}") == 0
    assert history_of(tmp_path / "resumed") == history_of(runs / "stack")
    assert metrics_of(tmp_path / "resumed")["images_seen"] == 2 * 256


def test_a_diverged_copy_is_named_by_its_seed_and_the_others_finish(tmp_path, monkeypatch):
    def poison(state, n):  # step 10: copy 1's first conv weights become Inf
        if n == 10:
            with torch.no_grad():
                next(state.model.parameters())[1].fill_(float("inf"))

    patch_steps(monkeypatch, poison)
    run = tmp_path / "run"
    code = cnnlab_train(run, "model=lenet5", *SMALL, "trainer.epochs=2", "seeds=3")
    assert code == 0
    m = metrics_of(run)
    assert [row["status"] for row in m["per_seed"]] == ["completed", "diverged", "completed"]
    assert "seed 1: loss became" in (run / "train.log").read_text()
    done = [row["accuracy"] for row in m["per_seed"] if row["accuracy"] is not None]
    assert m["accuracy"] == pytest.approx(sum(done) / 2)


def test_seeds_below_one_are_refused_with_one_line(tmp_path, capfd):
    assert cnnlab_train(tmp_path / "run", "model=mlp", *SMALL, "seeds=0") == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: seeds=0")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_digits_seeds_4_matches_four_single_runs(tmp_path):
    """The issue's check: each copy within 0.011 of its separate run on real data."""
    common = ["model=lenet5", "data=digits", "trainer.epochs=2"]
    assert cnnlab_train(tmp_path / "stack", *common, "seeds=4") == 0
    m = metrics_of(tmp_path / "stack")
    assert [row["seed"] for row in m["per_seed"]] == [0, 1, 2, 3]
    for row in m["per_seed"]:
        assert cnnlab_train(tmp_path / str(row["seed"]), *common, f"seed={row['seed']}") == 0
        single = metrics_of(tmp_path / str(row["seed"]))["accuracy"]
        assert abs(row["accuracy"] - single) <= 0.011
