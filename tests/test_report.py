"""What a run folder records (issue 18): each run's own peak memory in a sweep, a diverged
copy left out of every mean and picture, results that a failing picture or tracker cannot
cost, a resume with nothing to train refused, macro F1 over the classes present, and
asymmetric kernels counted as convs."""

import logging
import math
import statistics
import sys

import pytest
import torch
from conftest import MLP, SMALL, cnnlab_train, metrics_of, patch_steps

from cnnlab import loggers, pictures, report, run
from cnnlab.config import LeNetConfig
from cnnlab.models import build_model, count_conv_layers

# ---- 18.3: peak memory per run --------------------------------------------------------------


@pytest.mark.skipif(sys.platform != "linux", reason="the per-run RSS peak is Linux's VmHWM")
def test_each_sweep_job_records_its_own_peak_memory(tmp_path, monkeypatch):
    original, calls = run.load_tensors, []

    def load(cfg, device):  # job 0 alone touches 1 GiB more, then frees it
        if not calls:
            big = torch.ones(2**28)  # float32: 1 GiB
            del big
        calls.append(cfg.seed)
        return original(cfg, device)

    monkeypatch.setattr(run, "load_tensors", load)
    code = cnnlab_train(tmp_path, *MLP, "seed=0,1", multirun=True)
    assert code == 0 and calls == [0, 1]
    first, second = (metrics_of(next(tmp_path.glob(f"{n}_*"))) for n in (0, 1))
    assert second["peak_rss_mb"] < first["peak_rss_mb"] - 512


# ---- 18.5: a diverged copy is in no mean, curve or picture -------------------------------------


class Recorder(loggers.RunLogger):
    rows: list[dict] = []

    def __call__(self, row):
        Recorder.rows.append(row)


def test_a_diverged_copy_is_left_out_of_every_mean_and_picture(tmp_path, monkeypatch):
    def poison(state, n):  # step 10 (epoch 2): copy 0's first conv weights become Inf
        if n == 10:
            with torch.no_grad():
                next(state.model.parameters())[0].fill_(float("inf"))

    patch_steps(monkeypatch, poison)
    Recorder.rows = []
    monkeypatch.setattr(loggers, "open_logger", lambda *args: Recorder())
    seen = {}
    curve, filters, maps = report.plot_loss_curve, pictures.plot_filters, pictures.plot_feature_maps

    def keep(name, draw):
        def wrapped(*args, **kwargs):
            seen[name] = args[0]
            return draw(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(report, "plot_loss_curve", keep("curve", curve))
    monkeypatch.setattr(pictures, "plot_filters", keep("filters", filters))
    monkeypatch.setattr(pictures, "plot_feature_maps", keep("maps", maps))
    run = tmp_path / "run"
    assert cnnlab_train(run, "model=lenet5", *SMALL, "trainer.epochs=2", "seeds=3") == 0
    assert [r["status"] for r in metrics_of(run)["per_seed"]] == ["diverged", *["completed"] * 2]
    # trackers: epoch 2's means are over seeds 1 and 2, the copies still training
    last = [r for r in seen["curve"] if r["epoch"] == 2]
    assert Recorder.rows[-1]["test_loss"] == pytest.approx(
        statistics.fmean(r["test_loss"] for r in last)
    )
    assert all(math.isfinite(v) for row in Recorder.rows for v in row.values())
    # the curve: no row of the diverged copy
    assert {r["seed"] for r in seen["curve"]} == {1, 2}
    # the pictures: one live copy's weights, not copy 0's
    for name in ("filters", "maps"):
        assert all(torch.isfinite(p).all() for p in seen[name].parameters()), name
    assert "(2 seeds)" in (run / "train.log").read_text().splitlines()[-2]


# ---- 18.6: a failing picture or tracker costs no results ------------------------------------


def boom(*args, **kwargs):
    raise RuntimeError("cannot draw today")


@pytest.mark.parametrize(
    "target, name, in_metrics",
    [
        ((pictures, "plot_filters"), "filters.png", True),
        # final() may send the run folder: it comes after metrics.json, which cannot hold it
        ((loggers.RunLogger, "final"), "logger=none final()", False),
    ],
    ids=["filters", "tracker-final"],
)
def test_a_failure_after_the_evaluation_is_a_warning(
    tmp_path, monkeypatch, target, name, in_metrics
):
    monkeypatch.setattr(*target, boom)
    run = tmp_path / "run"
    assert cnnlab_train(run, *MLP, "pictures=true") == 0
    m = metrics_of(run)
    assert m["status"] == "completed" and m["error"] is None
    assert 0 <= m["accuracy"] <= 1 and len(m["per_class"]) == 10
    warning = f"{name} failed: RuntimeError: cannot draw today"
    assert m["warnings"] == ([warning] if in_metrics else [])
    assert f"warning: {name} failed" in (run / "train.log").read_text()
    assert (run / "mistakes.png").is_file() and (run / "history.csv").is_file()


def test_a_run_without_trouble_has_no_warnings(tmp_path):
    assert cnnlab_train(tmp_path / "run", *MLP) == 0
    assert metrics_of(tmp_path / "run")["warnings"] == []


def test_a_tracker_that_stops_logging_is_a_warning_in_metrics(tmp_path, monkeypatch):
    class Broken(loggers.RunLogger):
        def __call__(self, row):
            raise OSError("disk full")

    monkeypatch.setattr(loggers, "open_logger", lambda *a: loggers.Guarded("broken", Broken()))
    assert cnnlab_train(tmp_path / "run", *MLP) == 0
    m = metrics_of(tmp_path / "run")
    assert m["warnings"] == ["logger=broken stopped logging: OSError: disk full"]


# ---- 18.9: a resume with nothing to train is refused ------------------------------------------


@pytest.mark.parametrize("epochs", [1, 2])
def test_a_resume_with_nothing_to_train_is_refused(tmp_path, capfd, epochs):
    done = tmp_path / "done"
    assert cnnlab_train(done, *MLP, "trainer.epochs=2") == 0
    capfd.readouterr()
    run = tmp_path / "resumed"
    args = (*MLP, f"trainer.epochs={epochs}", f"resume={done}")
    assert cnnlab_train(run, *args) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: resume={done}"), err
    assert "already has 2 epochs" in err[0] and "trainer.epochs=3" in err[0]
    assert not run.exists()


# ---- 18.10: macro F1 over the classes present; asymmetric kernels ------------------------------


@pytest.mark.parametrize(
    "y_true, y_pred",
    [
        ([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]),  # class 3 in neither
        ([0, 0, 1, 1, 2, 2], [0, 3, 1, 1, 2, 0]),  # class 3 only predicted
        ([0, 0, 0, 1], [0, 0, 0, 0]),  # classes 2 and 3 in neither, 1 never predicted
    ],
)
def test_f1_macro_averages_the_classes_present_as_sklearn_does(y_true, y_pred):
    from sklearn.metrics import f1_score

    y, p = torch.tensor(y_true), torch.tensor(y_pred)
    cm = report.confusion_matrix(y, p, 4)
    _, f1_macro = report.per_class_scores(cm, ["a", "b", "c", "d"])
    expected = f1_score(y_true, y_pred, average="macro", zero_division=0)
    assert f1_macro == pytest.approx(expected)


@pytest.mark.parametrize("kernel", [(1, 5), (5, 1), (3, 3)])
def test_asymmetric_kernels_are_conv_layers(kernel):
    model = build_model(LeNetConfig(kernel_size=kernel, padding="same"), (1, 28, 28), 10)
    assert count_conv_layers(model) == 2


def test_logging_handler_is_gone_after_the_run(tmp_path):
    before = list(logging.getLogger("cnnlab").handlers)
    assert cnnlab_train(tmp_path / "run", *MLP, "trainer.epochs=0") == 0
    assert logging.getLogger("cnnlab").handlers == before
