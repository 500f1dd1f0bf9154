"""Compare run folders: one table and two plots for a sweep or any set of runs.

A run folder is what `cnnlab train` writes (metrics.json, history.csv, .hydra/); a sweep
folder holds one run folder per job. Everything here reads plain JSON, CSV and YAML and
imports neither Hydra nor torch, so it also works on a laptop holding copies of results.
Bad folders are data, not errors: a run that failed, died or left a broken file becomes a
row with its status and a reason. Only bad arguments raise (CompareError).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import statistics
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import yaml

RUN_MARKERS = ("metrics.json", "history.csv", ".hydra", "train.log", "checkpoints")
# Config keys that differ between runs without changing what was trained (or that name the
# model, which has its own column). `seed` is here because runs differing only in seed are
# repeats of one experiment: they are grouped, not given a column.
NOISE = (
    "seed",
    "model.name",
    "data.root",
    "data.download",
    "resume",
    "logger",
    "hydra",
    "trainer.progress",
    "trainer.log_every",
    "trainer.checkpoint",
)
METRICS = ("params", "conv_layers", "accuracy_%", "f1_macro", "train_seconds", "images_per_second")
FORMATS = ("table", "csv", "md", "json")
SORT_ALIASES = {"accuracy": "accuracy_%"}
# Digits shown in table/md; csv and json keep full precision.
DECIMALS = {
    "params": 0,
    "conv_layers": 0,
    "accuracy_%": 2,
    "f1_macro": 4,
    "train_seconds": 1,
    "images_per_second": 0,
}


class CompareError(ValueError):
    """A bad argument (unknown path, sort key or format); the CLI prints it as one line."""


class Stat(NamedTuple):
    """Mean and sample standard deviation of a metric over runs that differ only in seed."""

    mean: float
    std: float


# ---------------------------------------------------------------- finding and reading runs


def find_runs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Run folders in and under `paths` (run or sweep folders), in natural order."""
    found: dict[Path, None] = {}
    for path in map(Path, paths):
        if not path.exists():
            raise CompareError(f"no such folder: {path}")
        if not path.is_dir():
            raise CompareError(f"not a folder: {path}")
        found.update(dict.fromkeys(_walk(path.resolve())))  # a dict: the same run given twice
    return sorted(found, key=lambda p: _natural(str(p)))


def _walk(folder: Path) -> Iterable[Path]:
    if _is_run(folder):
        yield folder
        return
    for child in folder.iterdir():
        if child.is_dir() and not child.name.startswith("."):
            yield from _walk(child)


def _is_run(folder: Path) -> bool:
    if (folder / "multirun.yaml").exists():  # a sweep folder, whatever else it holds
        return False
    if any((folder / marker).exists() for marker in RUN_MARKERS):
        return True
    # A job that died before writing anything leaves an empty folder: list it (as missing)
    # rather than hide it. A leaf holding other files, such as an --out folder, is no run.
    return all(entry.name.startswith(".") for entry in folder.iterdir())


def _natural(text: str) -> list:
    """Sort key that puts job 10 after job 2."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def load_run(path: str | os.PathLike) -> dict:
    """Everything a run folder says about itself. Never raises for bad content."""
    path = Path(path)
    history = _read_history(path / "history.csv")
    run = {
        "path": path,
        "status": "missing",
        "reason": None,
        "metrics": {},
        "history": history,
        "config": flatten(_read_yaml(path / ".hydra" / "config.yaml", dict)),
        "overrides": _read_yaml(path / ".hydra" / "overrides.yaml", list),
    }
    file = path / "metrics.json"
    if not file.exists():
        # With a history the run was killed (or is still running) after some epochs.
        epochs = f" ({len(history)} epochs in history.csv)" if history else ""
        return {**run, "reason": "no metrics.json" + epochs}
    try:
        text = file.read_text()
        metrics = json.loads(text) if text.strip() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        # e.g. a run killed while writing: "Expecting ',' delimiter: line 3 column 1 (char 40)"
        return {**run, "status": "unreadable", "reason": f"metrics.json unreadable: {error}"}
    if not isinstance(metrics, dict):
        return {**run, "status": "unreadable", "reason": "metrics.json is empty or not an object"}
    status = str(metrics.get("status") or "unknown")
    reason = None
    if status != "completed":
        reason = " ".join(str(metrics.get("error") or "").split()) or None  # keep it one line
        reason = reason or ("metrics.json has no status" if status == "unknown" else None)
    return {**run, "metrics": metrics, "status": status, "reason": reason}


def _read_history(file: Path) -> list[dict]:
    rows: list[dict] = []
    try:
        with file.open(newline="") as f:
            for record in csv.DictReader(f):
                try:
                    rows.append({key: float(value) for key, value in record.items() if key})
                except (TypeError, ValueError):  # a truncated last line: keep the rows before it
                    break
    except (OSError, UnicodeDecodeError, csv.Error):
        pass
    return rows


def _read_yaml(file: Path, kind: type):
    try:
        data = yaml.safe_load(file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return kind()
    return data if isinstance(data, kind) else kind()


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"model": {"width": 2}} -> {"model.width": 2}; lists stay values."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# ---------------------------------------------------------------- the table


def compare_table(runs: Iterable, sort: str | None = None) -> list[dict]:
    """One row per run (or per group of runs differing only in seed); see _table."""
    return [row for row, _ in _table(runs, sort)[0]]


def _table(runs: Iterable, sort: str | None) -> tuple[list[tuple[dict, list[dict]]], list[str]]:
    """Rows paired with the runs behind them, and the config keys that differ."""
    runs = [run if isinstance(run, dict) else load_run(run) for run in runs]
    names = _short_names([run["path"] for run in runs])
    runs = [{**run, "name": name} for run, name in zip(runs, names, strict=True)]
    keys = _differing_keys(runs)
    groups = _group_by_config(runs)
    grouped = any(len(group) > 1 for group in groups)
    table = []
    for group in groups:
        first = group[0]
        row = {
            "run": first["name"] + (f" (+{len(group) - 1})" if len(group) > 1 else ""),
            "model": first["metrics"].get("model") or first["config"].get("model.name"),
        }
        row.update({key: first["config"].get(key) for key in keys})
        row.update({col: _aggregate([_metric(run, col) for run in group]) for col in METRICS})
        if grouped:
            row["n"] = len(group)
        row.update(status=first["status"], reason=first["reason"])
        table.append((row, group))
    if not any(row["reason"] for row, _ in table):
        for row, _ in table:
            del row["reason"]
    columns = ["run", "model", *keys, *METRICS] + ["n"] * grouped + ["status", "reason"]
    return (_sorted(table, sort, columns) if sort else table), keys


def _short_names(paths: list[Path]) -> list[str]:
    """Paths relative to the folder holding them all: job names for one sweep, less the
    overrides every job shares (`0_data=digits,model.width=1` -> `0_model.width=1`)."""
    try:
        base = os.path.commonpath([path.parent for path in paths])
    except ValueError:  # nothing given, or relative mixed with absolute paths
        return [str(path) for path in paths]
    names = [Path(os.path.relpath(path, base)).as_posix() for path in paths]
    jobs = [JOB_NAME.fullmatch(name) for name in names]
    if len(names) < 2 or not all(jobs):
        return names
    # a value may hold commas itself (model.channels=[6,16]): split only before `key=`
    items = [re.split(r",(?=[\w.+~/-]+=)", job[2]) for job in jobs]
    shared = set.intersection(*(set(i) for i in items))
    return [
        f"{job[1]}_{','.join(i for i in its if i not in shared)}".rstrip("_")
        for job, its in zip(jobs, items, strict=True)
    ]


JOB_NAME = re.compile(r"(\d+)_(.+)")  # Hydra's sweep subdir: job number, overrides


def _canon(value) -> str:
    """A comparable form of a config value: 1 and 1.0 are the same setting."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = float(value)
    return json.dumps(value, sort_keys=True, default=str)


def _is_noise(key: str) -> bool:
    return any(key == noise or key.startswith(noise + ".") for noise in NOISE)


def _differing_keys(runs: list[dict]) -> list[str]:
    # Runs without a config (died early, copied without .hydra/) would make every key look
    # different, so only runs that have one decide. A key only some runs have (model.hidden
    # of an MLP beside LeNet's model.channels) is a difference of model, which the model
    # column already shows. The order is the config's own.
    configs = [run["config"] for run in runs if run["config"]]
    keys = dict.fromkeys(key for config in configs for key in config)
    return [
        key
        for key in keys
        if not _is_noise(key)
        and all(key in config for config in configs)
        and len({_canon(config[key]) for config in configs}) > 1
    ]


def _group_by_config(runs: list[dict]) -> list[list[dict]]:
    groups: dict = {}
    for index, run in enumerate(runs):
        key: object = index  # runs that did not complete keep a row of their own
        if run["status"] == "completed" and run["config"]:
            settings = {k: _canon(v) for k, v in run["config"].items() if not _is_noise(k)}
            key = (run["metrics"].get("model"), tuple(sorted(settings.items())))
        groups.setdefault(key, []).append(run)
    return list(groups.values())


def _metric(run: dict, column: str):
    value = run["metrics"].get("accuracy" if column == "accuracy_%" else column)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    return value * 100 if column == "accuracy_%" else value


def _aggregate(values: list):
    values = [value for value in values if value is not None]
    if not values:
        return None
    if len(set(values)) == 1:  # e.g. params: the same for every seed, so no "± 0"
        return values[0]
    return Stat(statistics.mean(values), statistics.stdev(values))


def _sorted(table: list, sort: str, columns: list[str]) -> list:
    desc = sort.startswith("-")
    column = sort.lstrip("-")
    column = SORT_ALIASES.get(column, column)
    if column not in columns:
        raise CompareError(f"unknown sort key {sort!r}; columns: {', '.join(columns)}")

    def value(item):
        v = item[0].get(column)
        v = v.mean if isinstance(v, Stat) else v
        return None if v is None or v != v else v  # v != v: NaN, e.g. a diverged loss

    def key(item):  # numbers before text, text in natural order (job 10 after job 2)
        v = value(item)
        return (0, v, []) if isinstance(v, (int, float)) else (1, 0, _natural(str(v)))

    present = sorted((item for item in table if value(item) is not None), key=key, reverse=desc)
    return present + [item for item in table if value(item) is None]  # blanks last either way


# ---------------------------------------------------------------- output formats


def format_rows(rows: list[dict], fmt: str = "table") -> str:
    """rows as an aligned text table, csv, GitHub markdown or json."""
    _check_format(fmt)
    if fmt in ("csv", "json"):  # machine formats: a grouped value is two columns, x and x_std
        plain = _split_stats(rows)
        if fmt == "json":
            # json has no NaN: a diverged run's value is simply unknown
            finite = [{k: None if v != v else v for k, v in row.items()} for row in plain]
            return json.dumps(finite, indent=2)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(plain[0]) if plain else [])
        writer.writeheader()
        writer.writerows(plain)
        return buffer.getvalue().replace("\r\n", "\n")
    if not rows:
        return "(no runs)"
    columns = list(rows[0])
    cells = [[_cell(row[col], col) for col in columns] for row in rows]
    number = (int, float, Stat)  # right-aligned
    numeric = [all(isinstance(r[c], number) for r in rows if r[c] is not None) for c in columns]
    if fmt == "md":
        lines = ["| " + " | ".join(columns) + " |"]
        lines.append("|" + "|".join("---:" if num else "---" for num in numeric) + "|")
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in cells]
        return "\n".join(lines)
    widths = [max(len(col), *(len(line[i]) for line in cells)) for i, col in enumerate(columns)]

    def line(texts):
        cells = zip(texts, widths, numeric, strict=True)
        padded = (text.rjust(w) if num else text.ljust(w) for text, w, num in cells)
        return "  ".join(padded).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, cells)])


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise CompareError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")


def _split_stats(rows: list[dict]) -> list[dict]:
    stat_columns = {col for row in rows for col, value in row.items() if isinstance(value, Stat)}
    plain_rows = []
    for row in rows:
        plain = {}
        for col, value in row.items():
            plain[col] = value.mean if isinstance(value, Stat) else value
            if col in stat_columns:
                plain[col + "_std"] = value.std if isinstance(value, Stat) else None
        plain_rows.append(plain)
    return plain_rows


def _cell(value, column: str) -> str:
    if value is None:
        return ""
    if isinstance(value, Stat):
        return f"{_cell(value.mean, column)} ± {_cell(value.std, column)}"
    if column in DECIMALS and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:,.{DECIMALS[column]}f}"
    return str(value)


# ---------------------------------------------------------------- files and plots


def write_summary(runs: Iterable, out_dir: str | os.PathLike, sort: str | None = None) -> list:
    """comparison.csv, comparison.md and two plots in out_dir; returns the rows."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table, keys = _table(runs, sort)
    rows = [row for row, _ in table]
    # The tables first: if a plot fails, the numbers are already on disk.
    (out / "comparison.csv").write_text(format_rows(rows, "csv"))
    images = "![accuracy vs parameters](accuracy_vs_params.png)\n\n![test loss](loss_curves.png)"
    (out / "comparison.md").write_text(format_rows(rows, "md") + "\n\n" + images + "\n")
    labels = _labels(rows, keys)
    _plot_accuracy(rows, labels, out / "accuracy_vs_params.png")
    _plot_losses(table, labels, out / "loss_curves.png")
    return rows


def _labels(rows: list[dict], keys: list[str]) -> list[str]:
    """What tells the runs apart, e.g. 'width=2.0, depth=1', for legends and point labels."""
    short = {key: key.rsplit(".", 1)[-1] for key in keys}
    if len(set(short.values())) < len(keys):  # data.name and model.name would both be 'name'
        short = {key: key for key in keys}
    show_model = len({row["model"] for row in rows if row["model"]}) > 1
    labels = []
    for row in rows:
        parts = [str(row["model"])] * show_model
        parts += [f"{short[key]}={_cell(row[key], key)}" for key in keys if row[key] is not None]
        label = ", ".join(parts) or row["run"]
        labels.append(label + (f" [{row['status']}]" if row["status"] != "completed" else ""))
    return labels


def _figure(title: str, xlabel: str, ylabel: str):
    # Figure without pyplot: no global backend switch and no figure registry to leak,
    # so this is safe inside a notebook, a Hydra callback or a headless cluster job.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5), layout="constrained")
    axes = figure.subplots()
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel)
    axes.grid(True, alpha=0.3)
    return figure, axes


def _plot_accuracy(rows: list[dict], labels: list[str], file: Path) -> None:
    figure, axes = _figure("Test accuracy vs parameters", "parameters (log scale)", "accuracy (%)")
    xs = []
    for row, label in zip(rows, labels, strict=True):
        params, accuracy = row["params"], row["accuracy_%"]
        if params is None or accuracy is None:
            continue  # a failed or unreadable run has no point to draw
        x = params.mean if isinstance(params, Stat) else params
        y, error = (accuracy.mean, accuracy.std) if isinstance(accuracy, Stat) else (accuracy, 0)
        axes.errorbar(x, y, yerr=error or None, fmt="o", capsize=3)
        axes.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
        xs.append(x)
    if xs and min(xs) > 0:
        axes.set_xscale("log")
        axes.margins(x=0.25)  # room for the labels of the outermost points
    elif not xs:
        axes.text(0.5, 0.5, "no params and accuracy", ha="center", transform=axes.transAxes)
    figure.savefig(file, dpi=120)


def _plot_losses(table: list, labels: list[str], file: Path) -> None:
    figure, axes = _figure("Test loss per epoch", "epoch", "test loss")
    for index, ((_, group), label) in enumerate(zip(table, labels, strict=True)):
        # The seeds of one group share a colour and a single legend entry.
        for run in group:
            history = [h for h in run["history"] if "epoch" in h and "test_loss" in h]
            if history:
                epochs = [h["epoch"] for h in history]
                losses = [h["test_loss"] for h in history]
                axes.plot(epochs, losses, marker=".", color=f"C{index % 10}", label=label)
                label = "_nolegend_"
    if axes.lines:
        axes.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
        axes.legend(fontsize="small")
    else:
        axes.text(0.5, 0.5, "no history.csv in these runs", ha="center", transform=axes.transAxes)
    figure.savefig(file, dpi=120)


# ---------------------------------------------------------------- entry points


def compare_command(paths, sort: str | None = None, fmt: str = "table", out=None) -> int:
    """`cnnlab compare`: 0 once the table is printed (failed runs are rows, not errors),
    2 for a bad argument."""
    try:
        _check_format(fmt)
        runs = [load_run(path) for path in find_runs(paths)]
        if not runs:
            raise CompareError(f"no run folders in: {', '.join(map(str, paths))}")
        rows = compare_table(runs, sort)
    except CompareError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_rows(rows, fmt))
    if out is not None:
        write_summary(runs, out, sort)
        # stderr, so that `--format json --out DIR > table.json` stays valid json
        print(f"wrote comparison.csv, comparison.md and plots to {out}", file=sys.stderr)
    return 0


def summarize_sweep(sweep_dir: str | os.PathLike) -> list[dict]:
    """End of a multirun: the summary files into the sweep folder, the table to stdout."""
    sweep_dir = Path(sweep_dir)
    runs = [load_run(path) for path in find_runs([sweep_dir])] if sweep_dir.is_dir() else []
    if not runs:
        print(f"no job folders in {sweep_dir}")
        return []
    rows = write_summary(runs, sweep_dir)
    print(format_rows(rows, "table"))
    print(f"sweep summary: {sweep_dir / 'comparison.md'}")
    return rows


def failed(rows: list[dict]) -> list[dict]:
    """The rows whose run did not complete (failed, diverged, interrupted, missing, ...)."""
    return [row for row in rows if row["status"] != "completed"]
