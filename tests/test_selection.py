"""Issue 20: choose on validation, report on test. A seeded, stratified split held out of
the training images; per-epoch validation figures; trainer.keep=best and trainer.patience;
the checkpoint carries the selection through a resume.

Issue 28: the validation split, early stopping, multi-scale checks and trainer.threads
attacked as a hostile user would. A split that holds out nothing or everything, or leaves
a class the test set holds out of training, is bad input found by the pre-flight check
from the real training count of every source: one `error:` line on stderr, exit 2, no run
folder. A run stopped early stays stopped when resumed."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import (
    QUICK,
    SMALL,
    WHEEL,
    cnnlab_train,
    folder_cfg,
    history_of,
    make_folder,
    metrics_of,
    patch_steps,
    wheel_root,
)

from cnnlab import compare, data
from cnnlab.config import (
    DataConfig,
    SyntheticDataConfig,
    UcrDataConfig,
)

DIGITS = ["data=digits", "pictures=false"]


def first_best(rows: list[dict], key: str = "val_accuracy") -> int:
    """The epoch of the highest value (the earliest on a tie), as keep=best chooses."""
    best = max(float(row[key]) for row in rows)
    return next(int(row["epoch"]) for row in rows if float(row[key]) == best)


def held_out_everywhere(ds, full, fraction: float) -> None:
    """The split of any source: round(fraction * N) images, each class its share give or
    take one, and exactly the source's training images, split in two."""
    n = len(full.y_train)
    assert len(ds.y_val) == round(fraction * n) and len(ds.y_train) == n - len(ds.y_val)
    for c, count in enumerate(torch.bincount(full.y_train).tolist()):
        assert abs(int((ds.y_val == c).sum()) - fraction * count) < 1
    assert torch.equal(full.x_train[ds.val_index], ds.x_val)
    assert torch.equal(ds.x_test, full.x_test)  # the test set is not touched


def test_split_is_a_stratified_fifth_of_digits_fixed_by_val_seed_alone():
    full = data.load(DataConfig(name="digits"))
    ds = data.load(DataConfig(name="digits", val_fraction=0.2))
    assert len(full.y_train) == 1347
    assert len(ds.y_val) == round(0.2 * 1347) and len(ds.y_train) == 1347 - len(ds.y_val)
    # in the class proportions: each class holds out a fifth of its images, give or take one
    for c, count in enumerate(torch.bincount(full.y_train).tolist()):
        assert abs(int((ds.y_val == c).sum()) - 0.2 * count) < 1
    # the held-out images are training images, and none of them is trained on
    assert torch.equal(full.x_train[ds.val_index], ds.x_val)
    kept = torch.ones(1347, dtype=torch.bool)
    kept[ds.val_index] = False
    assert torch.equal(full.x_train[kept], ds.x_train)
    other = data.load(DataConfig(name="digits", val_fraction=0.2, val_seed=1))
    assert not torch.equal(other.val_index.sort().values, ds.val_index.sort().values)


def test_split_works_on_a_sample_and_refuses_an_empty_side():
    ds = data.load(DataConfig(name="digits", train_size=500, val_fraction=0.1))
    assert len(ds.y_val) == 50 and len(ds.y_train) == 450
    with pytest.raises(ValueError, match=r"data.val_fraction=0.001 holds out 0 of"):
        data.validation_split(torch.arange(10) % 2, 0.001, 0)
    for bad in (1, 1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"data.val_fraction="):
            DataConfig(name="digits", val_fraction=bad)
    with pytest.raises(ValueError, match=r"holds out 0 of the 4 training images"):
        data.check(DataConfig(name="digits", train_size=4, val_fraction=0.1), data.idx.DIGITS)


def test_every_source_holds_validation_out(tmp_path):

    make_folder(tmp_path / "imgs", {"a": 10, "b": 6, "c": 4})
    configs = [
        lambda **kw: SyntheticDataConfig(**kw),
        lambda **kw: folder_cfg(tmp_path / "imgs", tmp_path, image_size=8, **kw),
    ]
    if WHEEL.is_file():
        root = wheel_root(tmp_path / "ucr", WHEEL)
        configs.append(lambda **kw: UcrDataConfig(root=str(root), download=False, **kw))
    for make in configs:
        held_out_everywhere(data.load(make(val_fraction=0.25)), data.load(make()), 0.25)


def test_runs_with_other_seeds_validate_on_the_same_images(tmp_path):
    runs = [tmp_path / f"seed{s}" for s in (0, 1)]
    for s, run in enumerate(runs):
        assert (
            cnnlab_train(run, *DIGITS, "data.val_fraction=0.2", "trainer.epochs=1", f"seed={s}")
            == 0
        )
    first, second = (metrics_of(run)["validation"] for run in runs)
    assert first["images"] == 269 and first == second  # the digest of the index set too


def test_keep_best_reports_the_test_figures_of_the_best_epoch(tmp_path):
    run, rerun = tmp_path / "best", tmp_path / "rerun"
    chosen = ["data.val_fraction=0.2", "trainer.lr=0.01", "seed=1"]
    assert cnnlab_train(run, *DIGITS, *chosen, "trainer.keep=best", "trainer.epochs=8") == 0
    history, metrics = history_of(run), metrics_of(run)
    assert [int(r["epoch"]) for r in history] == list(range(1, 9))
    assert all("val_loss" in r and "val_accuracy" in r for r in history)
    assert "test_accuracy" not in history[0]  # the test set is read once, at the end
    best = first_best(history)
    assert metrics["best_epoch"] == best < 8  # a run whose last epoch is not its best
    assert metrics["val_accuracy"] == pytest.approx(max(float(r["val_accuracy"]) for r in history))
    saved = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert saved["best_epoch"] == [best]
    # the same run stopped at that epoch gives the same test figures: the kept weights
    assert cnnlab_train(rerun, *DIGITS, *chosen, f"trainer.epochs={best}") == 0
    assert metrics["accuracy"] == metrics_of(rerun)["accuracy"]
    assert metrics["stopped_early"] is False


def test_each_copy_of_seeds_keeps_its_own_best_epoch(tmp_path):
    run = tmp_path / "seeds"
    overrides = ["data.val_fraction=0.2", "trainer.lr=0.01", "trainer.keep=best"]
    assert cnnlab_train(run, *DIGITS, *overrides, "trainer.epochs=6", "seeds=3") == 0
    history, metrics = history_of(run), metrics_of(run)
    per_seed = {row["seed"]: row for row in metrics["per_seed"]}
    for seed in (0, 1, 2):
        rows = [r for r in history if int(r["seed"]) == seed]
        assert per_seed[seed]["best_epoch"] == first_best(rows)
        assert per_seed[seed]["val_accuracy"] == pytest.approx(
            max(float(r["val_accuracy"]) for r in rows)
        )
    assert metrics["best_epoch"] == max(row["best_epoch"] for row in per_seed.values())


def test_patience_stops_a_run_whose_validation_accuracy_stalls(tmp_path):
    run = tmp_path / "stall"
    # a learning rate too small to move the accuracy: it stalls from the first epoch
    stall = ["data.val_fraction=0.2", "trainer.lr=1e-7", "trainer.patience=2"]
    assert cnnlab_train(run, *DIGITS, *stall, "trainer.epochs=10") == 0
    history, metrics = history_of(run), metrics_of(run)
    best = first_best(history)
    assert metrics["stopped_early"] is True and metrics["status"] == "completed"
    assert metrics["epochs_completed"] == len(history) == best + 2 < 10
    log = (run / "train.log").read_text()
    assert f"stopped early after epoch {best + 2}" in log


@pytest.mark.parametrize(
    "override", ["trainer.keep=best", "trainer.patience=3"], ids=["keep", "patience"]
)
def test_choosing_without_a_validation_split_is_refused(tmp_path, run_main, override):
    run = tmp_path / "run"
    r = run_main(tmp_path, "train", *QUICK, override, f"hydra.run.dir={run}")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {override} needs a validation split")
    assert "data.val_fraction=0" in lines[0] and not run.exists()


def test_resume_carries_the_best_weights_their_epoch_and_the_patience(tmp_path):
    whole, part = tmp_path / "whole", tmp_path / "part"
    chosen = [*DIGITS, "data.val_fraction=0.2", "trainer.lr=0.01", "trainer.keep=best"]
    chosen += ["seeds=2", "trainer.patience=3"]
    assert cnnlab_train(whole, *chosen, "trainer.epochs=7") == 0
    assert cnnlab_train(part, *chosen, "trainer.epochs=3") == 0
    assert cnnlab_train(tmp_path / "on", *chosen, "trainer.epochs=7", f"resume={part}") == 0
    resumed, expected = metrics_of(tmp_path / "on"), metrics_of(whole)
    for key in ("accuracy", "val_accuracy", "best_epoch", "stopped_early", "epochs_completed"):
        assert resumed[key] == expected[key], key
    assert [r["best_epoch"] for r in resumed["per_seed"]] == [
        r["best_epoch"] for r in expected["per_seed"]
    ]


def test_compare_shows_and_sorts_by_validation_accuracy(tmp_path):
    runs = [tmp_path / f"lr{lr}" for lr in ("1e-4", "1e-2")]
    for run in runs:
        lr = run.name.removeprefix("lr")
        assert cnnlab_train(run, *DIGITS, "data.val_fraction=0.2", "trainer.epochs=2",
                            f"trainer.lr={lr}") == 0  # fmt: skip
    table = compare.compare_table(compare.load_runs(runs), sort="-val_accuracy")
    chosen = [metrics_of(run)["val_accuracy"] * 100 for run in runs]
    assert list(table["val_accuracy_%"]) == pytest.approx(sorted(chosen, reverse=True))
    assert list(table.columns).index("val_accuracy_%") < list(table.columns).index("accuracy_%")
    rows = json.loads(compare.format_table(table, "json"))
    assert all("val_accuracy_%" in row for row in rows)


def test_loss_curve_and_trackers_show_validation_not_test(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from matplotlib.figure import Figure

    drawn, save = {}, Figure.savefig
    monkeypatch.setattr(
        Figure,
        "savefig",
        lambda fig, path, **kw: (drawn.setdefault(str(path), fig), save(fig, path, **kw)),
    )
    run = tmp_path / "run"
    overrides = ["data.val_fraction=0.2", "trainer.epochs=2", "logger=tensorboard"]
    assert cnnlab_train(run, *DIGITS, *overrides) == 0
    (ax,) = drawn[str(run / "loss_curve.png")].axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "train loss (mean per epoch)", "validation loss",
    ]  # fmt: skip
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert {"train_loss", "val_loss", "val_accuracy"} <= set(events.Tags()["scalars"])
    assert "test_accuracy" not in events.Tags()["scalars"]
    logged = [e.value for e in events.Scalars("val_accuracy")]
    assert logged == pytest.approx([float(r["val_accuracy"]) for r in history_of(run)], rel=1e-6)


def test_a_resumed_early_stopped_run_equals_the_straight_run(tmp_path):
    stall = ["data=digits", "pictures=false", "data.val_fraction=0.2", "trainer.lr=1e-7"]
    stall += ["trainer.patience=2", "trainer.epochs=8"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert cnnlab_train(straight, *stall) == 0
    assert metrics_of(straight)["stopped_early"] is True
    assert cnnlab_train(resumed, *stall, f"resume={straight}") == 0
    a, b = metrics_of(straight), metrics_of(resumed)
    for key in ("epochs_completed", "accuracy", "val_accuracy", "best_epoch", "stopped_early"):
        assert a[key] == b[key], key
    assert history_of(straight) == history_of(resumed)
    # more patience on resume trains on: the stop was the old patience's
    more = tmp_path / "more"
    assert cnnlab_train(more, *stall, "trainer.patience=4", f"resume={straight}") == 0
    assert metrics_of(more)["epochs_completed"] > a["epochs_completed"]


def test_keep_best_with_a_copy_that_diverges_after_its_best_epoch(tmp_path, monkeypatch):
    """Copy 1 turns Inf in epoch 2: the others keep their own best epochs, the diverged
    copy's kept (finite) weights are not reported as a result, and nothing is NaN."""

    def poison(state, n):  # 6 steps an epoch (192 images, batches of 32): step 10 is in epoch 2
        if n == 10:
            with torch.no_grad():
                next(state.model.parameters())[1].fill_(float("inf"))

    patch_steps(monkeypatch, poison)
    run = tmp_path / "run"
    chosen = ["model=lenet5", *SMALL, "data.val_fraction=0.25", "trainer.keep=best", "seeds=3"]
    assert cnnlab_train(run, *chosen, "trainer.epochs=3", "trainer.patience=2") == 0
    m = metrics_of(run)
    per_seed = m["per_seed"]
    assert [r["status"] for r in per_seed] == ["completed", "diverged", "completed"]
    live = [r for r in per_seed if r["status"] == "completed"]
    assert per_seed[1]["accuracy"] is None
    assert m["accuracy"] == pytest.approx(sum(r["accuracy"] for r in live) / 2)
    assert m["val_accuracy"] == pytest.approx(sum(r["val_accuracy"] for r in live) / 2)
    assert all(r["best_epoch"] in (1, 2, 3) for r in live)
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    weights = best["model"] if "model" in best else best
    for key, value in weights.items():
        if value.is_floating_point():
            assert torch.isfinite(value[[0, 2]]).all(), key
