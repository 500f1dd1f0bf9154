"""Issue 28: the validation split, early stopping, multi-scale checks and trainer.threads
attacked as a hostile user would. A split that holds out nothing or everything, or leaves
a class the test set holds out of training, is bad input found by the pre-flight check
from the real training count of every source: one `error:` line on stderr, exit 2, no run
folder. A run stopped early stays stopped when resumed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import SMALL, cnnlab_train, history_of, metrics_of, patch_steps
from test_image_folder import make_folder

from cnnlab import cli, data
from cnnlab.config import DataConfig, ImageFolderDataConfig, LeNetConfig, SyntheticDataConfig
from cnnlab.data.ucr import UCR_FOLDER
from cnnlab.models import build_model
from cnnlab.outcome import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

RUN = ["model=mlp", "pictures=false", "trainer.epochs=1", "trainer.checkpoint=false"]


def refused(tmp_path: Path, capfd, *overrides: str, code: int = 2) -> str:
    """`cnnlab train` refuses before a run folder: `code`, one `error:` line on stderr and
    nothing of it on stdout."""
    capfd.readouterr()
    got = cnnlab_train(tmp_path / "run", *RUN, *overrides)
    out, err = capfd.readouterr()
    assert got == code, out[-2000:] + err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "error" not in out and "Traceback" not in out + err
    assert not (tmp_path / "run").exists()
    return lines[0]


def ucr_set(root: Path, train: str, test: str) -> list[str]:
    folder = root / UCR_FOLDER / "Chinatown"
    folder.mkdir(parents=True)
    (folder / "Chinatown_TRAIN.tsv").write_text(train)
    (folder / "Chinatown_TEST.tsv").write_text(test)
    return ["data=ucr", "data.name=Chinatown", f"data.root={root}", "data.download=false"]


def series(label: int, n: int) -> str:
    return "".join(f"{label}\t{i}\t{i % 3}\t{-i}\n" for i in range(n))


# ---- a share that holds out nothing or everything ------------------------------------------


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["data=digits", "data.val_fraction=0.0001"], "holds out 0 of the 1347"),
        (
            ["data=digits", "data.train_size=100000", "data.val_fraction=0.9999"],
            "holds out 1347 of the 1347",
        ),
    ],
    ids=["nothing", "everything"],
)
def test_a_share_that_holds_out_nothing_or_everything_is_refused_first(
    tmp_path, capfd, overrides, words
):
    line = refused(tmp_path, capfd, *overrides)
    assert "data.val_fraction=" in line and words in line


def test_a_ucr_share_of_nothing_is_refused_first(tmp_path, capfd):
    args = ucr_set(tmp_path / "root", series(1, 5) + series(2, 5), series(1, 2) + series(2, 2))
    line = refused(tmp_path, capfd, *args, "data.val_fraction=0.04")
    assert "data.val_fraction=0.04 holds out 0 of the 10" in line


def test_an_image_folder_share_of_nothing_is_refused_first(tmp_path, capfd):
    make_folder(tmp_path / "imgs", {"a": 4, "b": 4}, "train")
    make_folder(tmp_path / "imgs", {"a": 1, "b": 1}, "test")
    args = ["data=image_folder", f"data.path={tmp_path / 'imgs'}", "data.image_size=8"]
    line = refused(tmp_path, capfd, *args, "data.val_fraction=0.05")
    assert "data.val_fraction=0.05 holds out 0 of the 8" in line


# ---- a training split without a class the test set holds -----------------------------------


@pytest.mark.parametrize(
    "overrides, keys",
    [
        (["data.val_fraction=0.999"], "data.val_fraction=0.999"),
        (["data.train_size=10", "data.val_fraction=0.5"], "data.val_fraction=0.5"),
        (["data.train_size=5"], "data.train_size=5"),
    ],
    ids=["almost all held out", "half of ten", "a sample of five"],
)
def test_a_split_that_leaves_a_class_out_of_training_is_refused(tmp_path, capfd, overrides, keys):
    line = refused(tmp_path, capfd, "data=digits", *overrides)
    assert keys in line and "the test set holds" in line and "class" in line


def test_a_ucr_class_whose_only_series_is_held_out_is_refused(tmp_path, capfd):
    # two series of class 1, one of class 2: a half holds out two, one of them class 2's only
    args = ucr_set(tmp_path / "root", series(1, 2) + series(2, 1), series(1, 2) + series(2, 2))
    line = refused(tmp_path, capfd, *args, "data.val_fraction=0.5")
    assert "without 1 of the classes the test set holds (2)" in line


def test_image_folder_classes_of_one_image_cannot_lend_it_to_validation(tmp_path, capfd):
    """Stratification with one image per class: holding any out leaves its class untrained."""
    make_folder(tmp_path / "imgs", {"a": 1, "b": 1, "c": 1}, "train")
    make_folder(tmp_path / "imgs", {"a": 1, "b": 1, "c": 1}, "test")
    args = ["data=image_folder", f"data.path={tmp_path / 'imgs'}", "data.image_size=8"]
    line = refused(tmp_path, capfd, *args, "data.val_fraction=0.4")
    assert "the test set holds" in line


def test_the_same_split_is_refused_by_a_python_load():
    with pytest.raises(ConfigError, match="the test set holds"):
        data.load(DataConfig(name="digits", train_size=10, val_fraction=0.5))
    with pytest.raises(ConfigError, match="the test set holds"):
        data.load(SyntheticDataConfig(classes=10, train_size=4, test_size=64))


def test_a_test_sample_that_lacks_a_class_is_no_problem():
    """Fewer classes in the test set than in training is the user's choice, not an error."""
    ds = data.load(DataConfig(name="digits", test_size=3, val_fraction=0.1))
    assert len(ds.y_test) == 3 and set(ds.y_train.tolist()) == set(range(10))


def test_tiny_classes_keep_one_image_to_train_on_where_the_share_allows(tmp_path):
    make_folder(tmp_path / "imgs", {"a": 2, "b": 2, "c": 9}, "train")
    make_folder(tmp_path / "imgs", {"a": 1, "b": 1, "c": 1}, "test")
    cfg = ImageFolderDataConfig(
        path=str(tmp_path / "imgs"), root=str(tmp_path / "data"), image_size=8, val_fraction=0.2
    )
    ds = data.load(cfg)
    assert set(ds.y_train.tolist()) == {0, 1, 2} and len(ds.y_val) == round(0.2 * 13)


@pytest.mark.parametrize("val_seed", [0, 1, 7, 12345])
def test_every_val_seed_splits_the_same_counts_and_never_overlaps(val_seed):
    """Another val_seed is another draw of the same per-class counts: the pre-flight's
    check, made from counts, holds for every seed."""
    ds = data.load(DataConfig(name="digits", val_fraction=0.3, val_seed=val_seed))
    base = data.load(DataConfig(name="digits", val_fraction=0.3))
    assert torch.equal(torch.bincount(ds.y_val), torch.bincount(base.y_val))
    full = data.load(DataConfig(name="digits"))
    kept = torch.ones(len(full.y_train), dtype=torch.bool)
    kept[ds.val_index] = False
    assert int(kept.sum()) == len(ds.y_train)


# ---- resume after an early stop ----------------------------------------------------------


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


# ---- multi-scale stages and group norm ----------------------------------------------------


def test_group_norm_is_checked_on_the_channels_it_normalises(capfd):
    """With branches the bottleneck sits inside each branch, where no norm acts."""
    args = ["data=digits", "model.branches=[1,3,5]", "model.bottleneck=3"]
    capfd.readouterr()
    assert cli.main(["inspect", *args, "model.norm=group", "model.groups=2"]) == 0
    assert "error" not in capfd.readouterr().err
    cfg = LeNetConfig(branches=[1, 3, 5], bottleneck=3, norm="group", groups=2)
    assert build_model(cfg, (1, 28, 28), 10)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    # without branches the bottleneck's own block has a norm: 3 channels, 2 groups
    with pytest.raises(ConfigError, match="model.groups=2 does not divide 3 channels"):
        build_model(LeNetConfig(bottleneck=3, norm="group", groups=2), (1, 28, 28), 10)


# ---- trainer.threads ---------------------------------------------------------------------


def test_threads_as_a_quoted_number_is_that_number(tmp_path):
    run = tmp_path / "run"
    assert cnnlab_train(run, *RUN, "data=digits", "data.train_size=100", "trainer.threads='1'") == 0
    assert metrics_of(run)["threads"] == 1
    with pytest.raises(ConfigError, match="trainer.threads='two' is not allowed"):
        from cnnlab.config import TrainerConfig

        TrainerConfig(threads="two")


def test_digits_built_in_python_keep_no_folder_named_after_an_interpolation(tmp_path, monkeypatch):
    """A DataConfig made in Python holds data.root's interpolation as text: it is resolved
    where the path is used (CNNLAB_DATA, else ./data), never made a folder of that name."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CNNLAB_DATA", raising=False)
    data.load(DataConfig(name="digits"))
    assert [p.name for p in tmp_path.iterdir()] == ["data"]
    assert (tmp_path / "data" / "digits").is_dir()
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "elsewhere"))
    data.load(DataConfig(name="digits"))
    assert (tmp_path / "elsewhere" / "digits").is_dir()
    assert not any("$" in str(p) for p in tmp_path.rglob("*"))
    assert json.dumps(sorted(p.name for p in tmp_path.iterdir())) == '["data", "elsewhere"]'


# ---- keep=best with a copy that diverges -------------------------------------------------


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


def test_a_sweep_with_one_split_that_cannot_train_runs_no_job(tmp_path, capfd):
    capfd.readouterr()
    code = cnnlab_train(
        tmp_path / "sweep", *RUN, "data=digits", "data.val_fraction=0.2,0.0001", multirun=True
    )
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "data.val_fraction=0.0001 holds out 0" in err[0]
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("key", ["train_size", "test_size"])
def test_synthetic_data_without_a_size_is_refused_first(tmp_path, capfd, key):
    line = refused(tmp_path, capfd, "data=synthetic", f"data.{key}=null")
    assert f"data.{key}=null is not allowed for data=synthetic" in line
