"""cnnlab from Python: `train(*overrides)` runs what `cnnlab train` runs, `compare_runs(*paths)`
is `cnnlab compare`'s table (not `compare`: that name is the module cnnlab.compare).

    from cnnlab import compare_runs, train
    run = train("model=lenet5", "data=digits", "seeds=3")
    run.metrics["accuracy"], run.history, run.run_dir
    compare_runs("outputs")

Bad input raises a CnnlabError (cnnlab.outcome) whose message is the line the shell prints
after `error: `, and whose exit_code is the code it exits with; nothing is written. A run that
starts but fails or diverges is returned: its folder holds the reason, in metrics["status"]
and metrics["error"]. A run stopped by SIGINT or SIGTERM raises KeyboardInterrupt once its
folder is written, so a script or notebook stops there as it would without cnnlab.

Torch, Hydra and pandas load on the first call, not on import.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cnnlab.outcome import EXIT_CODES, CnnlabError, Status

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Run:
    """A run folder as `cnnlab train` wrote it: metrics.json, history.csv, and the folder."""

    metrics: dict
    history: pd.DataFrame
    run_dir: Path

    def __repr__(self) -> str:  # not the whole history and metrics
        accuracy = self.metrics.get("accuracy")
        shown = "" if accuracy is None else f", accuracy={accuracy:.4f}"
        return f"Run({str(self.run_dir)!r}, status={self.metrics.get('status')!r}{shown})"


def train(*overrides: str) -> Run:
    """`cnnlab train OVERRIDES` (one run, overrides as in the shell), returning its Run.
    The root logger is left as it was: Hydra sets up a run's console and train.log
    handlers there, which would otherwise take the caller's later log lines."""
    from cnnlab import hydra_app

    check_overrides(overrides)
    with logging_kept():
        run_dir, code = hydra_app.train_once(list(overrides))
    if run_dir is None:  # Hydra could not start the run: it said why on stderr
        raise CnnlabError("the run did not start: see Hydra's report above", Status.failed)
    run_dir = run_dir.absolute()  # the folder still, should the caller change folder
    path = run_dir / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError) as e:  # the run could not write it: the shell said why
        raise CnnlabError(f"{path}: {e}", Status.failed) from None
    if code >= EXIT_CODES[Status.interrupted]:
        raise KeyboardInterrupt(f"{run_dir}: {metrics.get('error', 'interrupted')}")
    return Run(metrics, _history(run_dir / "history.csv"), run_dir)


def check_overrides(overrides: tuple) -> None:
    """Each override a string, as the shell passes them."""
    for value in overrides:
        if not isinstance(value, str):
            hint = (
                ": unpack a list with train(*overrides)" if isinstance(value, list | tuple) else ""
            )
            raise CnnlabError(
                f"train({value!r}): overrides are strings, one per argument, as on the command "
                f'line, e.g. train("model=lenet5", "data=digits"){hint}'
            )


@contextlib.contextmanager
def logging_kept():
    """The root logger's handlers and level as they were before, after a run or its error;
    the handlers a run added closed (train.log's file)."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    level = root.level
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)


def _history(path: Path) -> pd.DataFrame:
    import pandas as pd

    # a run that failed before its first epoch has none
    return pd.read_csv(path) if path.is_file() else pd.DataFrame()


def compare_runs(
    *paths: str | os.PathLike, sort: str | None = None, baseline: str | None = None
) -> pd.DataFrame:
    """`cnnlab compare PATHS [--sort KEY] [--baseline KEY=VALUE]`'s table: one row per
    experiment, over the run folders in and under `paths` (run or sweep folders); with
    `baseline`, each other row's diff, ci95_low, ci95_high, p_value, paired and verdict."""
    from cnnlab import compare as comparison  # pandas: on the first call

    try:
        return comparison.compare_table(comparison.runs_in(paths), sort, baseline)
    except comparison.CompareError as e:
        raise CnnlabError(str(e)) from None
