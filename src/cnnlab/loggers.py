"""Trackers a run reports to besides its own folder (`logger=tensorboard`, `logger=mlflow`).

A tracker is called once per epoch with the history row, then `final(metrics, run_dir)` once
the run folder is written, then `close()`. Losing a tracker must never cost a training run,
so open_logger wraps each one: the first error is logged as a warning and the tracker is
dropped. A tracker's package is imported only when it is chosen (mlflow alone takes
about a second to import).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path

from cnnlab.config import flatten

log = logging.getLogger("cnnlab")

EXTRAS = {"tensorboard": "cluster", "mlflow": "mlflow"}  # the pip extra that installs each


class RunLogger:
    """logger=none, and the interface of the others: every call does nothing."""

    def __call__(self, row: dict) -> None:
        pass

    def final(self, metrics: dict, run_dir: Path) -> None:
        pass

    def close(self) -> None:
        pass


def open_logger(cfg, run_dir: Path, sweep_dir: Path | None = None) -> RunLogger:
    """The tracker that cfg.logger names (cfg: a config.TrainConfig), ready for the run in
    run_dir; sweep_dir is the sweep folder when the run is a sweep's job."""
    name = cfg.logger.name
    try:
        if name == "tensorboard":
            return Guarded(name, TensorBoardLogger(run_dir))
        if name == "mlflow":
            params = flatten(dataclasses.asdict(cfg))
            return Guarded(name, MLflowLogger(cfg.logger, run_dir, params, sweep_dir))
    except ImportError as e:
        hint = f"pip install 'cnnlab[{EXTRAS[name]}]'"
        log.warning("warning: logger=%s is off for this run: %s (%s)", name, first_line(e), hint)
    except Exception as e:
        log.warning("warning: logger=%s is off for this run: %s", name, first_line(e))
    return RunLogger()


def first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".splitlines()[0]


class Guarded(RunLogger):
    """Passes the calls on until one fails, then warns once and drops the tracker (close
    is still tried, so that a tracker can mark its run as failed)."""

    def __init__(self, name: str, tracker: RunLogger):
        self.name, self.tracker, self.failed = name, tracker, False

    def _call(self, method: str, *args) -> None:
        if self.failed and method != "close":
            return
        try:
            getattr(self.tracker, method)(*args)
        except Exception as e:
            if not self.failed:
                log.warning("warning: logger=%s stopped logging: %s", self.name, first_line(e))
            self.failed = True

    def __call__(self, row: dict) -> None:
        self._call("__call__", row)

    def final(self, metrics: dict, run_dir: Path) -> None:
        self._call("final", metrics, run_dir)

    def close(self) -> None:
        self._call("close")


class TensorBoardLogger(RunLogger):
    """Per-epoch scalars in <run>/tensorboard, for users who compare curves there."""

    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def __call__(self, row: dict) -> None:
        for key, value in row.items():  # report.mean_row's figures, validation ones too
            if key != "epoch":
                self.writer.add_scalar(key, value, row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MLflowLogger(RunLogger):
    """One MLflow run: the flattened config as params, the history rows as metrics per epoch,
    metrics.json's numbers as final metrics, and the run folder's files as artifacts.

    The experiment is cfg.experiment, else the sweep folder for a sweep's jobs (so one sweep
    is one experiment), named as from the folder cnnlab runs in, else "cnnlab".
    """

    def __init__(self, cfg, run_dir: Path, params: dict, sweep_dir: Path | None = None):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        # alembic announces each schema step of a new database at INFO, into train.log
        logging.getLogger("alembic").setLevel(logging.WARNING)
        run_dir = Path(run_dir).resolve()
        artifact_location = artifact_root(cfg.tracking_uri)
        self.client = MlflowClient(tracking_uri=cfg.tracking_uri)
        for key, value in HTTP_SETTINGS.items():  # the user's own settings win
            os.environ.setdefault(key, value)
        name = cfg.experiment or (sweep_name(sweep_dir) if sweep_dir else "cnnlab")
        tags = {"cnnlab.run_dir": str(run_dir)}
        if sweep_dir:
            tags["cnnlab.sweep_dir"] = str(Path(sweep_dir).resolve())
        experiment_id = self._experiment_id(name, artifact_location)
        run = self.client.create_run(experiment_id, run_name=run_dir.name, tags=tags)
        self.run_id = run.info.run_id
        self.status = "FAILED"  # until final() hears otherwise
        items = [Param(key, str(value)) for key, value in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params a call
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def _experiment_id(self, name: str, artifact_location: str | None) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=artifact_location)
        except Exception:  # another job of the same sweep created it a moment ago
            return self.client.get_experiment_by_name(name).experiment_id

    def _log_metrics(self, values: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def __call__(self, row: dict) -> None:
        self._log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])

    def final(self, metrics: dict, run_dir: Path) -> None:
        numbers = {k: v for k, v in metrics.items() if is_number(v)}
        self._log_metrics(numbers, step=metrics.get("epochs_completed", 0))
        self.client.set_tag(self.run_id, "cnnlab.status", metrics["status"])
        self.client.log_artifacts(self.run_id, str(run_dir))
        self.status = {"completed": "FINISHED", "interrupted": "KILLED"}.get(
            metrics["status"], "FAILED"
        )

    def close(self) -> None:
        self.client.set_terminated(self.run_id, self.status)


# MLflow's defaults retry an HTTP request 7 times with backoff (minutes against a server
# that is down, a warning each time) and wait 120 s for an answer. A tracker must never
# hold up a run: one try, 10 s, and the first failure turns the tracker off (Guarded).
HTTP_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def sweep_name(sweep_dir: Path) -> str:
    """outputs/sweeps/DAY/TIME: the sweep folder relative to the folder cnnlab runs in (as
    the user names it), absolute only when it lies elsewhere."""
    path = Path(sweep_dir).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def artifact_root(tracking_uri: str) -> str | None:
    """For an SQLite database, artifacts go to mlartifacts/ beside it (MLflow would put
    them in ./mlruns of whatever folder the command runs from); for a server, its choice.
    Creates the database's folder: SQLite will not."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    folder = Path(tracking_uri[len(prefix) :]).parent.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return (folder / "mlartifacts").as_uri()
