"""Run folders read back: where they are under a path, and what each says about itself.

A run folder is what `cnnlab train` writes (metrics.json, history.csv, .hydra/). Bad
folders are data, not errors: a run that failed, died or left a broken file becomes a
record with its status and a reason. Only a bad path raises (CompareError).
"""

from __future__ import annotations

import io
import json
import os
import re
import reprlib
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import yaml

from cnnlab.config import flatten

RUN_MARKERS = ("metrics.json", "history.csv", ".hydra", "train.log", "checkpoints")
# where the numbers come from in metrics.json: the run's own, and each seed's (per_seed)
RUN_NUMBERS = ("params", "macs", "conv_layers", "train_seconds", "images_per_second")
SEED_NUMBERS = ("accuracy", "f1_macro", "val_accuracy")
MAX_NUMBER = 2**53  # no figure of a run is larger; beyond, a float skips integers
YAML_KINDS = {dict: "mapping", list: "list"}
UNSET = (
    "-"  # table, md, plots, findings: a config key a run lacks (an MLP's model.norm) or sets null
)


class CompareError(ValueError):
    """A bad argument (unknown path, sort key or format); the CLI prints it as one line."""


def find_runs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Run folders in and under `paths` (run or sweep folders), in natural order: each run
    once, however many of the paths or links lead to it."""
    seen: set[tuple[int, int]] = set()  # the folders searched, by device and inode
    found = []
    for path in map(Path, paths):
        if not path.exists():
            raise CompareError(f"no such folder: {path}")
        if not path.is_dir():
            raise CompareError(f"not a folder: {path}")
        found += _walk(path.resolve(), seen)
    return sorted(found, key=lambda p: natural(str(p)))


def load_runs(paths: Iterable[str | os.PathLike]) -> list[dict]:
    """load_run of every run folder in and under `paths`."""
    return [load_run(path) for path in find_runs(paths)]


def runs_in(paths: Iterable[str | os.PathLike]) -> list[dict]:
    """load_runs, refusing paths that hold no run folder (a typo, an empty folder)."""
    runs = load_runs(paths)
    if not runs:
        raise CompareError(f"no run folders in: {', '.join(map(str, paths))}")
    return runs


def _walk(folder: Path, seen: set[tuple[int, int]]) -> Iterable[Path]:
    try:
        info = folder.stat()
        identity = (info.st_dev, info.st_ino)
        if identity in seen:  # a link back to a folder already searched: a loop, or a run twice
            return
        seen.add(identity)
        if _is_run(folder):
            yield folder
            return
        children = sorted(folder.iterdir())
    except OSError:  # gone, or not ours to list: nothing to find in it
        return
    for child in children:
        if child.is_dir() and not child.name.startswith("."):
            yield from _walk(child, seen)


def _is_run(folder: Path) -> bool:
    if (folder / "multirun.yaml").exists():  # a sweep folder, whatever else it holds
        return False
    if any((folder / marker).exists() for marker in RUN_MARKERS):
        return True
    # A job that died before writing anything leaves an empty folder: list it (as missing)
    # rather than hide it. A leaf holding other files, such as an --out folder, is no run.
    return all(entry.name.startswith(".") for entry in folder.iterdir())


def natural(text: str) -> list:
    """Sort key that puts job 10 after job 2."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def load_run(path: str | os.PathLike) -> dict:
    """Everything a run folder says about itself. Never raises for bad content: a file that
    cannot be read, or holds what cnnlab never writes, becomes the run's status and reason."""
    path = Path(path)
    history = _read_history(path / "history.csv")
    config, config_problem = _read_yaml(path / ".hydra" / "config.yaml", dict)
    run = {
        "path": path,
        "status": "missing",
        "reason": config_problem,
        "metrics": {},
        "history": history,
        "config": flatten(config),
        "overrides": _read_yaml(path / ".hydra" / "overrides.yaml", list)[0],
    }
    run["choices"] = group_choices(run["overrides"], run["config"])
    file = path / "metrics.json"
    if not file.exists():
        # With a history the run was killed (or is still running) after some epochs.
        epochs = history["epoch"].nunique() if "epoch" in history else 0
        note = f" ({epochs} epochs in history.csv)" if epochs else ""
        return {**run, "reason": "no metrics.json" + note}
    try:
        text = _read_text(file)
        metrics = json.loads(text) if text.strip() else None
    except (OSError, ValueError, RecursionError) as error:  # ValueError: not JSON, not UTF-8
        # e.g. a run killed while writing: "Expecting ',' delimiter: line 3 column 1 (char 40)"
        reason = f"metrics.json unreadable: {_one_line(error)}"
        return {**run, "status": "unreadable", "reason": reason}
    problem = _content_problem(metrics)
    if problem:
        return {**run, "status": "unreadable", "reason": f"metrics.json: {problem}"}
    status = _one_line(metrics.get("status") or "unknown")
    reason = run["reason"]  # a completed run may still have a broken config
    if status != "completed":
        reason = _one_line(metrics.get("error") or "") or None
        reason = reason or ("metrics.json has no status" if status == "unknown" else None)
        reason = reason or run["reason"]
    return {**run, "metrics": metrics, "status": status, "reason": reason}


def group_choices(overrides, config: dict) -> dict[str, str]:
    """The config groups a run chose on its command line or in its sweep (variant=kernel3,
    model=mlp): overrides whose key is a group's name, not a config key."""
    choices = {}
    for item in overrides if isinstance(overrides, list) else []:
        key, _, value = str(item).partition("=")
        key = key.lstrip("+~")
        if value and key.isidentifier() and key not in config:
            choices[key] = value
    return choices


def _content_problem(metrics) -> str | None:
    """What in metrics.json is not what cnnlab writes there, on one line; None if nothing.
    Only the keys compare reads are checked."""
    if not isinstance(metrics, dict):
        return "empty or not an object"
    for key in ("status", "model"):
        if not isinstance(metrics.get(key, ""), str | None):
            return f"{key} is {_shown(metrics[key])}, not a string"
    copies = metrics.get("per_seed")
    if copies is not None and not (
        isinstance(copies, list) and all(isinstance(copy, dict) for copy in copies)
    ):
        return f"per_seed is {_shown(copies)}, not a list of objects"
    values = [(key, metrics.get(key)) for key in (*RUN_NUMBERS, *SEED_NUMBERS)]
    values += [
        (f"per_seed[{i}].{key}", copy.get(key))
        for i, copy in enumerate(copies or [])
        for key in SEED_NUMBERS
    ]
    for key, value in values:
        if not isinstance(value, int | float | None) or isinstance(value, bool):
            return f"{key} is {_shown(value)}, not a number"
        if value is not None and not abs(value) <= MAX_NUMBER and value == value:  # NaN: none
            return f"{key} is {_shown(value)}: out of range"
    field = metrics.get("receptive_field")
    if field is not None and receptive_field(field) is None:
        return f"receptive_field is {_shown(field)}, not a number or a list of numbers"
    return None


def _shown(value) -> str:
    """A value as a short one-line repr, for a reason: a huge number or list is cut."""
    return _one_line(reprlib.repr(value))


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _read_text(file: Path) -> str:
    # a FIFO would block the read and a device never end it; a folder cannot be read
    if not file.is_file():
        raise OSError("not a regular file")
    return file.read_text()


def _read_history(file: Path) -> pd.DataFrame:
    """history.csv as numbers (a multi-seed run adds a seed column); empty if unreadable."""
    try:
        text = _read_text(file)
        history = pd.read_csv(io.StringIO(text)).apply(pd.to_numeric, errors="coerce")
    except (OSError, ValueError):  # pandas' parser errors and UnicodeDecodeError are ValueErrors
        return pd.DataFrame()
    # A run killed mid-write leaves a cut last line: keep the rows before it.
    return history if text.endswith("\n") else history.iloc[:-1]


def _read_yaml(file: Path, kind: type) -> tuple:
    """The file's content if it is a `kind`, and None; else kind() and why (None too when
    there is no file: a run copied without .hydra/ is no error)."""
    name = f"{file.parent.name}/{file.name}"
    if not file.exists():
        return kind(), None
    try:
        data = yaml.safe_load(_read_text(file))
    except (OSError, ValueError, RecursionError, yaml.YAMLError) as error:
        return kind(), f"{name} unreadable: {_one_line(error)}"
    if not isinstance(data, kind):
        return kind(), f"{name} is {_shown(data)}, not a {YAML_KINDS[kind]}"
    return data, None


# ---- the measurement a comparison judges (compare --metric) ----------------------------

DEFAULT_METRIC = "accuracy"
# a run's own figures and records, not measurements of a seed
NOT_MEASUREMENTS = (*RUN_NUMBERS, "seed", "numerics", "per_class", "receptive_field")


def seed_metric(copy: dict, name: str):
    """The number at dotted path `name` in one seed's figures (a per_seed entry, or a
    one-seed run's metrics.json): `accuracy`, `shift_accuracy.2` (a key or list index one
    level down); None where there is none."""
    value = copy
    for part in name.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return value if is_number else None


def metric_names(copy: dict, prefix: str = "") -> list[str]:
    """Every dotted path to a number in one seed's figures, less the run's own figures."""
    names = []
    items = copy.items() if isinstance(copy, dict) else enumerate(copy)
    for key, value in items:
        name = f"{prefix}{key}"
        if not prefix and (key in NOT_MEASUREMENTS or str(key).endswith("_std")):
            continue
        if isinstance(value, dict | list):
            names += metric_names(value, name + ".")
        elif seed_metric({"v": value}, "v") is not None:
            names.append(name)
    return names


def unknown_metric(runs: list[dict], metric: str) -> str:
    """Why `metric` names nothing: the measurements the runs do have."""
    copies = [c for run in runs for c in run["metrics"].get("per_seed") or [run["metrics"]]]
    known = dict.fromkeys(name for copy in copies for name in metric_names(copy))
    return f"--metric {metric}: no run has it; available: {', '.join(known) or 'none'}"


def in_points(name: str) -> bool:
    """An accuracy-like measurement (accuracy, val_accuracy, shift_accuracy.2, f1_macro): a
    fraction that compare shows in points (x 100), its intervals within [0, 100]."""
    return any(part.endswith("accuracy") or part.startswith("f1") for part in name.split("."))


def receptive_field(value) -> int | list | None:
    """16 or [16, 16] -> 16; [5, 9] -> [5, 9] (as `cnnlab inspect` gives it); anything
    else (not a whole number or a list of them) -> None."""
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return None
    return values[0] if len(set(values)) == 1 else values


def canon(value) -> str:
    """A comparable form of a config value: 1 and 1.0 are the same setting."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = float(value)
    return json.dumps(value, sort_keys=True, default=str)
