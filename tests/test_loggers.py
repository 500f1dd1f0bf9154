"""Trackers (loggers.py): `logger=mlflow` (skipped without mlflow) and `logger=tensorboard`;
a tracker that fails, is missing or cannot start warns once and the run trains on."""

import json
import logging
import sqlite3
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    PROCESS_RUN,
    SMALL,
    cnnlab_train,
    metrics_of,
    read_history,
)

from cnnlab import loggers
from cnnlab.config import MLflowLoggerConfig, TrainConfig


class Broken(loggers.RunLogger):
    def __init__(self):
        self.calls = []

    def __call__(self, row):
        self.calls.append("row")
        raise OSError("disk full")

    def close(self):
        self.calls.append("close")


def mlflow_db(path: Path, query: str) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute(query).fetchall()


def warnings_in(run: Path) -> list[str]:
    return [line for line in (run / "train.log").read_text().splitlines() if "WARNING" in line]


def test_a_failing_tracker_warns_once_and_never_raises(caplog):
    broken = Broken()
    tracker = loggers.Guarded("broken", broken)
    with caplog.at_level(logging.WARNING, logger="cnnlab"):
        tracker({"epoch": 1})
        tracker({"epoch": 2})
        tracker.final({"status": "completed"}, Path("."))
        tracker.close()
    assert broken.calls == ["row", "close"]  # dropped after the failure; close still tried
    assert [r.getMessage() for r in caplog.records] == [
        "warning: logger=broken stopped logging: OSError: disk full"
    ]


def test_a_missing_tracker_package_warns_naming_the_extra(tmp_path, caplog, monkeypatch):
    # import mlflow (and any of its modules an earlier test loaded) now raises ImportError
    for name in ["mlflow", *(m for m in sys.modules if m.startswith("mlflow."))]:
        monkeypatch.setitem(sys.modules, name, None)
    with caplog.at_level(logging.WARNING, logger="cnnlab"):
        tracker = loggers.open_logger(TrainConfig(logger=MLflowLoggerConfig()), tmp_path)
    assert type(tracker) is loggers.RunLogger
    assert "logger=mlflow is off for this run" in caplog.text and "cnnlab[mlflow]" in caplog.text


def test_a_tracker_that_cannot_start_leaves_the_run_untracked(tmp_path, caplog):
    pytest.importorskip("mlflow")
    cfg = TrainConfig(logger=MLflowLoggerConfig(tracking_uri="nosuchscheme://x"))
    with caplog.at_level(logging.WARNING, logger="cnnlab"):
        tracker = loggers.open_logger(cfg, tmp_path)
    assert type(tracker) is loggers.RunLogger
    assert "logger=mlflow is off for this run" in caplog.text


def test_mlflow_logs_params_metrics_and_artifacts(tmp_path, run_cli):
    pytest.importorskip("mlflow")
    db, run = tmp_path / "tracking" / "mlflow.db", tmp_path / "run"
    r = run_cli(
        tmp_path,
        "train",
        *PROCESS_RUN,
        "trainer.epochs=2",
        "model.width=2",
        "logger=mlflow",
        f"logger.tracking_uri=sqlite:///{db}",
        f"hydra.run.dir={run}",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((run / "metrics.json").read_text())
    ((status, artifacts),) = mlflow_db(db, "select status, artifact_uri from runs")
    assert status == "FINISHED"
    params = dict(mlflow_db(db, "select key, value from params"))
    assert params["model.width"] == "2.0" and params["data.name"] == "synthetic"
    final = mlflow_db(db, "select value from metrics where key = 'accuracy'")
    assert final == [(metrics["accuracy"],)]
    per_epoch = mlflow_db(db, "select step, value from metrics where key = 'train_loss'")
    history = read_history(run)
    assert sorted(per_epoch) == [(int(h["epoch"]), float(h["train_loss"])) for h in history]
    files = Path(artifacts.removeprefix("file://"))
    assert (files / "metrics.json").read_text() == (run / "metrics.json").read_text()
    assert (files / ".hydra" / "overrides.yaml").is_file()


@pytest.mark.slow
def test_mlflow_sweep_is_one_experiment_tagged_with_its_folder(tmp_path, run_cli):
    pytest.importorskip("mlflow")
    db, sweep = tmp_path / "mlflow.db", tmp_path / "sweep"
    r = run_cli(
        tmp_path,
        "train",
        "-m",
        *PROCESS_RUN,
        "model.width=1,2",
        "logger=mlflow",
        f"logger.tracking_uri=sqlite:///{db}",
        f"hydra.sweep.dir={sweep}",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    runs = mlflow_db(db, "select experiment_id, status from runs")
    assert len(runs) == 2 and len({e for e, _ in runs}) == 1
    assert {s for _, s in runs} == {"FINISHED"}
    (name,) = mlflow_db(db, f"select name from experiments where experiment_id = {runs[0][0]}")
    # named as the user names the folder, from where cnnlab runs (loggers.sweep_name)
    assert name == ("sweep",)
    tags = mlflow_db(db, "select value from tags where key = 'cnnlab.sweep_dir'")
    assert tags == [(str(sweep.resolve()),)] * 2


def test_mlflow_server_that_refuses_connections_costs_one_warning(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.setenv(key, "x")  # so that teardown restores the variable's absence
        monkeypatch.delenv(key)
    run = tmp_path / "run"
    started = time.monotonic()
    code = cnnlab_train(
        run,
        *SMALL,
        "trainer.epochs=1",
        "pictures=false",
        "logger=mlflow",
        "logger.tracking_uri=http://127.0.0.1:9",  # a closed port
    )
    seconds = time.monotonic() - started
    assert code == 0 and metrics_of(run)["status"] == "completed"
    warned = warnings_in(run)
    assert len(warned) == 1 and "logger=mlflow" in warned[0], warned
    assert seconds < 60, f"{seconds:.0f} s: the tracker held up the run"


def test_tensorboard_folder_that_cannot_be_written_costs_one_warning(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "tensorboard").write_text("a file where the log folder would go")
    code = cnnlab_train(run, *SMALL, "trainer.epochs=2", "pictures=false", "logger=tensorboard")
    assert code == 0 and metrics_of(run)["status"] == "completed"
    warned = warnings_in(run)
    assert len(warned) == 1 and "logger=tensorboard" in warned[0], warned
