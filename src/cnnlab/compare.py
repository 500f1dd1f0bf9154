"""Compare run folders: one table and two plots for a sweep or any set of runs.

A run folder is what `cnnlab train` writes (metrics.json, history.csv, .hydra/); a sweep
folder holds one run folder per job. Nothing here imports Hydra or torch, and seaborn only
when a plot is drawn. Bad folders are data, not errors: a run that failed, died or left a
broken file becomes a row with its status and a reason. Only bad arguments raise.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import yaml

from cnnlab.config import REPEAT_KEYS, flatten, is_run_setting

RUN_MARKERS = ("metrics.json", "history.csv", ".hydra", "train.log", "checkpoints")
# The metric columns in the order shown, with the digits that table and md show (csv and json
# keep full precision). macs and receptive_field are shown only when a run has them.
METRICS = {
    "params": 0,
    "macs": 0,
    "receptive_field": None,  # text: "16", or "5x9" when the axes differ
    "conv_layers": 0,
    "accuracy_%": 2,
    "f1_macro": 4,
    "train_seconds": 1,
    "images_per_second": 0,
}
OPTIONAL = ("macs", "receptive_field")
NUMBERS = [column for column, digits in METRICS.items() if digits is not None]  # averaged
INTEGERS = ["params", "macs", "conv_layers"]
FORMATS = ("table", "csv", "md", "json")
SORT_ALIASES = {"accuracy": "accuracy_%"}
JOB_NAME = re.compile(r"(\d+)_(.+)")  # Hydra's sweep subdir: job number, overrides


class CompareError(ValueError):
    """A bad argument (unknown path, sort key or format); the CLI prints it as one line."""


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
        epochs = history["epoch"].nunique() if "epoch" in history else 0
        note = f" ({epochs} epochs in history.csv)" if epochs else ""
        return {**run, "reason": "no metrics.json" + note}
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


def _read_history(file: Path) -> pd.DataFrame:
    """history.csv as numbers (a multi-seed run adds a seed column); empty if unreadable."""
    try:
        text = file.read_text()
        history = pd.read_csv(io.StringIO(text)).apply(pd.to_numeric, errors="coerce")
    except (OSError, ValueError):  # pandas' parser errors and UnicodeDecodeError are ValueErrors
        return pd.DataFrame()
    # A run killed mid-write leaves a cut last line: keep the rows before it.
    return history if text.endswith("\n") else history.iloc[:-1]


def _read_yaml(file: Path, kind: type):
    try:
        data = yaml.safe_load(file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return kind()
    return data if isinstance(data, kind) else kind()


# ---------------------------------------------------------------- the table


def compare_table(runs: Iterable, sort: str | None = None) -> pd.DataFrame:
    """One row per experiment: the seeds of runs that differ only in REPEAT_KEYS (and of a
    multi-seed run) give each metric x as its mean, x_std where they differ, and n.
    `runs`: run folders, or what load_run returned for them."""
    return _tables(runs, sort)[1]


def _tables(runs: Iterable, sort: str | None) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The per-seed frame, the grouped table and the config keys that differ."""
    runs = [run if isinstance(run, dict) else load_run(run) for run in runs]
    names = _short_names([run["path"] for run in runs])
    keys = _differing_keys(runs)
    seeds = _seed_rows(runs, names, keys)
    return seeds, _sorted(_group(seeds, keys), sort), keys


def _seed_rows(runs: list[dict], names: list[str], keys: list[str]) -> pd.DataFrame:
    """One row per trained seed: a run, or each seed of a multi-seed run."""
    records = []
    for index, (run, name) in enumerate(zip(runs, names, strict=True)):
        metrics, config = run["metrics"], run["config"]
        model = metrics.get("model") or config.get("model.name")
        group = index  # runs that did not complete keep a row of their own
        if run["status"] == "completed" and config:
            settings = {k: _canon(v) for k, v in config.items() if not _is_repeat_or_setting(k)}
            group = json.dumps([model, settings], sort_keys=True)
        row = {
            **{"folder": index, "group": group, "run": name, "model": model},
            **{key: config.get(key) for key in keys},
            **{column: metrics.get(column) for column in NUMBERS},
            "receptive_field": _receptive_field(metrics.get("receptive_field")),
            **{"status": run["status"], "reason": run["reason"]},
        }
        # a multi-seed run: accuracy and F1 of each seed, the other metrics of the run
        for seed in metrics.get("per_seed") or [metrics]:
            records.append(
                {**row, "accuracy_%": seed.get("accuracy"), "f1_macro": seed.get("f1_macro")}
            )
    frame = pd.DataFrame(records, dtype=object)  # object: config values keep their types
    frame[NUMBERS] = frame[NUMBERS].apply(pd.to_numeric, errors="coerce")  # bad values: NaN
    frame["accuracy_%"] *= 100
    return frame


def _receptive_field(value) -> str | None:
    """16 or [16, 16] -> "16"; [5, 9] -> "5x9"."""
    if isinstance(value, list):
        return "x".join(dict.fromkeys(map(str, value)))
    return None if value is None else str(value)


def _group(seeds: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    groups = seeds.groupby("group", sort=False)
    table = groups[["run", "model", *keys, "receptive_field", "status", "reason"]].first()
    others = groups["folder"].nunique() - 1
    table["run"] += (" (+" + others.astype(str) + ")").where(others > 0, "")
    table["n"] = groups.size()
    mean, std = groups[NUMBERS].mean(), groups[NUMBERS].std()
    # where the seeds agree (params), the value itself: no "± 0", no 10.800000000000001
    mean = mean.mask(std == 0, groups[NUMBERS].first())
    mean[INTEGERS] = mean[INTEGERS].round().astype("Int64")
    std = std.where(std > 0).dropna(axis=1, how="all")
    table = table.join(mean).join(std.add_suffix("_std"))
    shown = [col for col in METRICS if col not in OPTIONAL or table[col].notna().any()]
    columns = ["run", "model", *keys]
    columns += [c for col in shown for c in (col, col + "_std") if c in table]
    columns += ["n"] * bool((table["n"] > 1).any()) + ["status"]
    columns += ["reason"] * bool(table["reason"].notna().any())
    return table[columns].reset_index(drop=True)


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


def _canon(value) -> str:
    """A comparable form of a config value: 1 and 1.0 are the same setting."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = float(value)
    return json.dumps(value, sort_keys=True, default=str)


def _is_repeat_or_setting(key: str) -> bool:
    return key in REPEAT_KEYS or is_run_setting(key)


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
        if not _is_repeat_or_setting(key)
        and key != "model.name"  # the model column
        and all(key in config for config in configs)
        and len({_canon(config[key]) for config in configs}) > 1
    ]


def _sorted(table: pd.DataFrame, sort: str | None) -> pd.DataFrame:
    if not sort:
        return table
    column = sort.lstrip("-")
    column = SORT_ALIASES.get(column, column)
    if column not in table:
        raise CompareError(f"unknown sort key {sort!r}; columns: {', '.join(table.columns)}")
    table = table.sort_values(column, ascending=not sort.startswith("-"), key=_sort_key)
    return table.reset_index(drop=True)  # blanks (and NaN, e.g. a diverged loss) last


def _sort_key(column: pd.Series) -> pd.Series:
    """Numbers as numbers, anything else in natural order (job 10 after job 2)."""
    if _is_numeric(column):
        return column.astype(float)
    return column.map(lambda value: _natural(str(value)), na_action="ignore")


def _is_numeric(column: pd.Series) -> bool:
    kind = pd.api.types.infer_dtype(column, skipna=True)
    return kind in ("integer", "floating", "mixed-integer-float", "empty")


# ---------------------------------------------------------------- output formats


def format_table(table: pd.DataFrame, fmt: str = "table") -> str:
    """The table as aligned text, csv, GitHub markdown or json. csv and json keep every
    column (x and x_std, full precision); table and md show "mean ± std"."""
    if fmt not in FORMATS:
        raise CompareError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "json":  # json has no NaN: a missing or diverged value is null
        # not to_json: it writes 10.8 as 10.800000000000001, or cuts every value to 10 digits
        return json.dumps(
            table.astype(object).where(table.notna(), None).to_dict("records"), indent=2
        )
    if table.empty:
        return "(no runs)"
    shown = pd.DataFrame({col: _texts(table, col) for col in table if not col.endswith("_std")})
    if fmt == "md":
        shown = shown.apply(lambda texts: texts.str.replace("|", "\\|"))
    align = ["right" if _is_numeric(table[col]) else "left" for col in shown]
    text = shown.to_markdown(
        index=False,
        tablefmt="pipe" if fmt == "md" else "simple",
        disable_numparse=True,  # the cells are already formatted
        colalign=align,
    )
    return "\n".join(line.rstrip() for line in text.splitlines())


def _texts(table: pd.DataFrame, col: str) -> pd.Series:
    digits = METRICS.get(col)
    if digits is None:
        return table[col].map(str, na_action="ignore").fillna("")
    texts = table[col].map(lambda value: f"{value:,.{digits}f}", na_action="ignore").fillna("")
    if col + "_std" in table:
        std = table[col + "_std"].map(lambda value: f" ± {value:,.{digits}f}", na_action="ignore")
        texts += std.fillna("")
    return texts


# ---------------------------------------------------------------- files and plots


def write_summary(runs: Iterable, out_dir: str | os.PathLike, sort: str | None = None):
    """comparison.csv, comparison.md and two plots in out_dir; returns the table."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = [run if isinstance(run, dict) else load_run(run) for run in runs]
    seeds, table, keys = _tables(runs, sort)
    # The tables first: if a plot fails, the numbers are already on disk.
    table.to_csv(out / "comparison.csv", index=False)
    images = "![accuracy vs parameters](accuracy_vs_params.png)\n\n![test loss](loss_curves.png)"
    (out / "comparison.md").write_text(format_table(table, "md") + "\n\n" + images + "\n")
    # The plots show completed runs (the table has the others), told apart by what varies.
    seeds = seeds[seeds["status"] == "completed"]
    keys = [key for key in ["model", *keys] if seeds[key].map(_canon).nunique() > 1]
    _plot_accuracy(seeds, keys, out / "accuracy_vs_params.png")
    _plot_losses(runs, seeds, keys, out / "loss_curves.png")
    return table


def _roles(data: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, dict]:
    """seaborn's hue, style and facet column for the varied keys. A fourth key and beyond
    join the hue, so that no two configurations are ever averaged together."""
    data = data.assign(**{key: data[key].map(str) for key in keys})  # lists, None: labels
    roles = dict(zip(("style", "col"), keys[1:3], strict=False))
    hue_keys = keys[:1] + keys[3:]
    if hue_keys:
        roles["hue"] = ", ".join(hue_keys)
        data[roles["hue"]] = data[hue_keys].agg(", ".join, axis=1)
    # a marker per style where there is one (most points stand alone), else dots
    roles |= {"markers": True} if "style" in roles else {"marker": "o"}
    return data, roles


# What both plots share: lines over seeds as mean and standard deviation.
PLOT = {"kind": "line", "errorbar": "sd", "legend": "full", "height": 4, "aspect": 1.3}


X_LABELS = {"params": "parameters", "macs": "MACs per input"}


def _plot_accuracy(seeds: pd.DataFrame, keys: list[str], file: Path) -> None:
    import seaborn as sns
    from matplotlib.ticker import EngFormatter

    data, roles = _roles(seeds.dropna(subset=["params", "accuracy_%"]), keys)
    measures = ["params"] + ["macs"] * bool(data["macs"].notna().any())
    # one row of panels per x measure: parameters, and MACs when the runs have them
    data = data.melt(id_vars=list(data.columns.drop(measures)), value_vars=measures, var_name="x")
    grid = sns.relplot(
        data.dropna(subset=["value"]),
        x="value",
        y="accuracy_%",
        row="x" if len(measures) > 1 else None,
        err_style="bars",
        facet_kws={"sharex": "row"},
        **PLOT,
        **roles,
    )
    grid.set_axis_labels("", "test accuracy (%)")
    # each row of panels says its measure on its own x axis, so no "x = params" titles
    grid.set_titles(template="{col_var} = {col_name}" if "col" in roles else "")
    for measure, row in zip(measures, grid.axes, strict=True):
        for axes in row:
            axes.set_xlabel(X_LABELS[measure])
            axes.xaxis.set_major_formatter(EngFormatter())  # 50 k, 1 M
    grid.tight_layout()  # room for the upper row's x labels under it
    _save(grid, file)


def _plot_losses(runs: list[dict], seeds: pd.DataFrame, keys: list[str], file: Path) -> None:
    import seaborn as sns

    columns = seeds.drop_duplicates("folder").set_index("folder")[keys].map(str)
    curves = [pd.DataFrame(columns=["epoch", "test_loss"])]  # an empty plot if no history
    curves += [runs[f]["history"].assign(**columns.loc[f].to_dict()) for f in columns.index]
    data, roles = _roles(pd.concat(curves, ignore_index=True), keys)
    # the seeds of one configuration (runs, or seeds in one run) become a mean and a band
    grid = sns.relplot(data, x="epoch", y="test_loss", **PLOT, **roles)
    grid.set_axis_labels("epoch", "test loss")
    for axes in grid.axes.flat:
        axes.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
    _save(grid, file)


def _save(grid, file: Path) -> None:
    import matplotlib.pyplot as plt

    grid.savefig(file, dpi=120)
    plt.close(grid.figure)  # pyplot keeps every open figure: a long sweep would leak them


# ---------------------------------------------------------------- entry points


def compare_command(paths, sort: str | None = None, fmt: str = "table", out=None) -> int:
    """`cnnlab compare`: 0 once the table is printed (failed runs are rows, not errors),
    2 for a bad argument."""
    try:
        runs = [load_run(path) for path in find_runs(paths)]
        if not runs:
            raise CompareError(f"no run folders in: {', '.join(map(str, paths))}")
        text = format_table(compare_table(runs, sort), fmt)
    except CompareError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(text)
    if out is not None:
        write_summary(runs, out, sort)
        # stderr, so that `--format json --out DIR > table.json` stays valid json
        print(f"wrote comparison.csv, comparison.md and plots to {out}", file=sys.stderr)
    return 0


def summarize_sweep(sweep_dir: str | os.PathLike) -> pd.DataFrame:
    """End of a multirun: the summary files into the sweep folder, the table to stdout."""
    sweep_dir = Path(sweep_dir)
    runs = [load_run(path) for path in find_runs([sweep_dir])] if sweep_dir.is_dir() else []
    if not runs:
        print(f"no job folders in {sweep_dir}")
        return pd.DataFrame(columns=["run", "status"])
    table = write_summary(runs, sweep_dir)
    print(format_table(table, "table"))
    print(f"sweep summary: {sweep_dir / 'comparison.md'}")
    return table


def failed(table: pd.DataFrame) -> list[dict]:
    """The rows whose run did not complete (failed, diverged, interrupted, missing, ...)."""
    return table[table["status"] != "completed"].to_dict("records")
