"""Compare run folders: one table and two plots for a sweep or any set of runs.

A run folder is what `cnnlab train` writes (metrics.json, history.csv, .hydra/); a sweep
folder holds one run folder per job. records.py reads them (a bad folder is a row with its
status and a reason, not an error), this module makes the table and its formats, and
plots.py draws the plots. Nothing here imports Hydra or torch, and seaborn only when a
plot is drawn. Only bad arguments raise.
"""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from cnnlab import files, findings, plots
from cnnlab.config import REPEAT_KEYS, is_run_setting, override_text
from cnnlab.records import (
    DEFAULT_METRIC,
    RUN_NUMBERS,
    SEED_NUMBERS,
    UNSET,
    CompareError,
    canon,
    in_points,
    load_run,
    load_runs,
    natural,
    receptive_field,
    runs_in,
    seed_metric,
    unknown_metric,
)

# The metric columns in the order shown, with the digits that table and md show (csv and json
# keep full precision). macs and receptive_field are shown only when a run has them.
METRICS = {
    "params": 0,
    "macs": 0,
    "receptive_field": None,  # a number, or [h, w] where the axes differ: "16", "5x9" as text
    "conv_layers": 0,
    "val_accuracy_%": 2,  # the figure a choice between rows is made on, where runs have it
    "accuracy_%": 2,
    "f1_macro": 4,
    "train_seconds": 1,
    "images_per_second": 0,
}
OPTIONAL = ("macs", "receptive_field", "val_accuracy_%")
NUMBERS = [column for column, digits in METRICS.items() if digits is not None]  # averaged
INTEGERS = ["params", "macs", "conv_layers"]
FORMATS = ("table", "csv", "md", "json")
SORT_ALIASES = {"accuracy": "accuracy_%", "val_accuracy": "val_accuracy_%"}
JOB_NAME = re.compile(r"(\d+)_(.+)")  # Hydra's sweep subdir: job number, overrides


# ---------------------------------------------------------------- the table


def compare_table(
    runs: Iterable,
    sort: str | None = None,
    baseline: str | None = None,
    metric: str = DEFAULT_METRIC,
) -> pd.DataFrame:
    """One row per experiment: the seeds of runs that differ only in REPEAT_KEYS (and of a
    multi-seed run) give each metric x as its mean, x_std where they differ, and n. With
    `baseline` (KEY=VALUE[,KEY=VALUE], the row it names) each other row gains its verdict
    columns (verdicts.py) on `metric` (a dotted path into each seed's figures).
    `runs`: run folders, or what load_run returned for them."""
    return _tables(runs, sort, baseline, metric)[1].drop(columns="group")


def _tables(
    runs: Iterable, sort: str | None, baseline: str | None = None, metric: str = DEFAULT_METRIC
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The per-seed frame, the grouped table and the config keys that differ."""
    runs = [run if isinstance(run, dict) else load_run(run) for run in runs]
    names = _short_names([run["path"] for run in runs])
    keys = _differing_keys(runs)
    seeds = findings.one_per_seed(_seed_rows(runs, names, keys, metric), names)
    seeds.insert(1, "config", seeds["folder"].map(dict(enumerate(config_names(runs, names)))))
    table = _group(seeds, keys)
    if metric != DEFAULT_METRIC and seeds["metric"].isna().all():
        raise CompareError(unknown_metric(runs, metric))
    if baseline is not None:
        table = findings.with_verdicts(table, seeds, runs, baseline, metric)
    # the group (json of model and settings) stays as a column for findings.md, not shown
    return seeds, _sorted(table, sort).rename_axis("group").reset_index(), keys


def _seed_rows(runs: list[dict], names: list[str], keys: list[str], metric: str) -> pd.DataFrame:
    """One row per trained seed: a run, or each seed of a multi-seed run. A copy of a
    multi-seed run that diverged keeps a row, marked, without figures of its own.
    `metric`: the figure judged, x 100 for an accuracy (points)."""
    records = []
    scale = 100 if in_points(metric) else 1
    for index, (run, name) in enumerate(zip(runs, names, strict=True)):
        metrics, config = run["metrics"], run["config"]
        model = metrics.get("model") or config.get("model.name")
        group = index  # runs that did not complete keep a row of their own
        if run["status"] == "completed" and config:
            settings = {
                k: canon(v)
                for k, v in config.items()
                if not _is_repeat_or_setting(k) and v is not None  # null: as if not there
            }
            group = json.dumps([model, settings], sort_keys=True)
        chosen = findings.settings(run)  # the config and the group choices, merged once
        row = {
            **{"folder": index, "group": group, "run": name, "model": model},
            **{key: chosen.get(key) for key in keys},
            **{column: metrics.get(column) for column in RUN_NUMBERS},
            "receptive_field": receptive_field(metrics.get("receptive_field")),
            **{"status": run["status"], "reason": run["reason"]},
            "stack": len(metrics.get("per_seed") or [metrics]),  # seeds trained together
        }
        # a multi-seed run: accuracy and F1 of each seed, the other metrics of the run
        for copy in metrics.get("per_seed") or [metrics]:
            diverged = copy is not metrics and copy.get("status") == "diverged"
            seed = {key: None if diverged else copy.get(key) for key in SEED_NUMBERS}
            judged = None if diverged else seed_metric(copy, metric)
            records.append(
                {**row, "accuracy_%": seed["accuracy"], "f1_macro": seed["f1_macro"]}
                | {"val_accuracy_%": seed["val_accuracy"], "diverged": diverged}
                | {"seed": copy.get("seed", metrics.get("seed", config.get("seed")))}
                | {"metric": None if judged is None else judged * scale}
            )
    columns = ["folder", "group", "run", "model", *keys, *METRICS, "status", "reason", "diverged"]
    columns += ["seed", "metric", "stack"]
    frame = pd.DataFrame(records, columns=columns, dtype=object)  # config values keep types
    frame[[*NUMBERS, "metric"]] = frame[[*NUMBERS, "metric"]].apply(pd.to_numeric, errors="coerce")
    frame[["accuracy_%", "val_accuracy_%"]] *= 100
    frame["diverged"] = frame["diverged"].astype(bool)
    return frame


def _axes_text(value) -> str:
    """The table's form of a receptive field: 16, or 5x9."""
    return "x".join(map(str, value)) if isinstance(value, list) else str(value)


def _group(seeds: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    groups = seeds.groupby("group", sort=False)
    table = groups[["config", "run", "model", *keys, "receptive_field", "status", "reason"]].first()
    others = groups["folder"].nunique() - 1
    table["run"] += (" (+" + others.astype(str) + ")").where(others > 0, "")
    table["repeats"] = groups["repeats"].first()  # copies of a (config, seed) counted once
    # diverged copies are counted apart and left out of every mean, std and n
    finished = seeds[~seeds["diverged"]].groupby("group", sort=False)
    table["n"] = finished.size().reindex(table.index, fill_value=0)
    table["diverged"] = groups["diverged"].sum()
    numbers = finished[NUMBERS]
    mean, std = numbers.mean().reindex(table.index), numbers.std().reindex(table.index)
    # where the seeds agree (params), the value itself: no "± 0", no 10.800000000000001;
    # where every copy diverged, the run's own figures (params), no accuracy
    mean = mean.mask(std == 0, numbers.first()).fillna(groups[NUMBERS].first())
    mean[INTEGERS] = mean[INTEGERS].round().astype("Int64")
    std = std.where(std > 0).dropna(axis=1, how="all")
    table = table.join(mean).join(std.add_suffix("_std"))
    shown = [col for col in METRICS if col not in OPTIONAL or table[col].notna().any()]
    columns = ["config", "run", "model", *keys]
    columns += [c for col in shown for c in (col, col + "_std") if c in table]
    diverged = bool(table["diverged"].any())
    repeated = bool(table["repeats"].any())
    columns += ["n"] * (diverged or repeated or bool((table["n"] > 1).any()))
    columns += ["diverged"] * diverged + ["repeats"] * repeated
    columns += ["status"] + ["reason"] * bool(table["reason"].notna().any())
    return table[columns]  # indexed by group (_tables resets it)


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


def config_names(runs: list[dict], folders: list[str]) -> list[str]:
    """What tells each run's configuration apart, as a reader names it: the model's name
    (mlp, lenet5, lenet5_wide), the groups chosen differently among runs of that model
    (kernel3, ECG200), then its keys that differ among them (`lenet5 width=2 depth=2`),
    less the keys those groups decide (variant=kernel3 sets model.kernel_size). A run
    without a config: its model's name, else its folder's (`folders`)."""
    heads = [
        run["metrics"].get("model") or run["config"].get("model.name") or folder
        for run, folder in zip(runs, folders, strict=True)
    ]
    settings = [
        {k: canon(v) for k, v in run["config"].items() if v is not None} if run["config"] else None
        for run in runs
    ]
    names = []
    for i, run in enumerate(runs):
        if settings[i] is None:
            names.append(heads[i])
            continue
        peers = [j for j, head in enumerate(heads) if head == heads[i] and settings[j] is not None]
        chosen = [
            group
            for group in run["choices"]
            if group != "model" and len({runs[j]["choices"].get(group) for j in peers}) > 1
        ]
        keys = [
            key
            for key in run["config"]
            if not _is_repeat_or_setting(key)
            and key != "model.name"
            and len({settings[j].get(key) for j in peers}) > 1
            and not (chosen and _decided(key, [runs[j] for j in peers], chosen))
        ]
        parts = [run["choices"][group] for group in chosen]
        parts += [
            f"{key.removeprefix('model.')}={override_text(run['config'][key])}"
            for key in keys
            if run["config"][key] is not None  # unset: the model's plain form
        ]
        names.append(" ".join([heads[i], *parts]))
    return names


def _decided(key: str, runs: list[dict], groups: list[str]) -> bool:
    """Whether the choices of `groups` decide `key` among `runs`: one value per choice."""
    values: dict = {}
    for run in runs:
        choice = tuple(run["choices"].get(group) for group in groups)
        values.setdefault(choice, set()).add(canon(run["config"].get(key)))
    return all(len(found) == 1 for found in values.values())


def _is_repeat_or_setting(key: str) -> bool:
    return key in REPEAT_KEYS or is_run_setting(key)


def _differing_keys(runs: list[dict]) -> list[str]:
    # Runs without a config (died early, copied without .hydra/) would make every key look
    # different, so only runs that have one decide. A key that some of them lack differs
    # too: an MLP has no model.norm, yet a LeNet-5 with norm=batch is not the plain one.
    # Lacking a key and setting it null are one thing (an MLP and a LeNet-5 without a
    # bottleneck), as in the groups. The order is the config's own.
    # the groups a run chose (variant=kernel3) first: they name what the keys after them set;
    # the model's choice is the model column
    configs = [
        {**{k: v for k, v in run["choices"].items() if k != "model"}, **run["config"]}
        for run in runs
        if run["config"]
    ]
    keys = dict.fromkeys(key for config in configs for key in config)
    return [
        key
        for key in keys
        if not _is_repeat_or_setting(key)
        and key != "model.name"  # the model column
        and len({canon(config.get(key)) for config in configs}) > 1
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
    return column.map(lambda value: natural(str(value)), na_action="ignore")


def _is_numeric(column: pd.Series) -> bool:
    kind = pd.api.types.infer_dtype(column, skipna=True)
    return kind in ("integer", "floating", "mixed-integer-float", "empty")


# ---------------------------------------------------------------- output formats


def format_table(table: pd.DataFrame, fmt: str = "table", wide: bool = False) -> str:
    """The table as aligned text, csv, GitHub markdown or json. csv and json keep every
    column (x and x_std, full precision; n, diverged and repeats); table and md show
    "mean ± std" and "n, k diverged (+k repeats)". json keeps numbers numbers (a receptive
    field: 16, or [5, 9]). The text table fits WIDTH columns unless `wide`: rows named by
    their config (config_names), without the key columns it names, less the columns of
    DROPPED first that do not fit, named on a line below; md: every column but the key
    columns."""
    if fmt not in FORMATS:
        raise CompareError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if fmt == "json":  # json has no NaN: a missing or diverged value is null
        # not to_json: it writes 10.8 as 10.800000000000001, or cuts every value to 10 digits
        return json.dumps(
            table.astype(object).where(table.notna(), None).to_dict("records"), indent=2
        )
    if "receptive_field" in table:  # csv too: 5x9, not "[5, 9]"
        table = table.assign(
            receptive_field=table["receptive_field"].map(_axes_text, na_action="ignore")
        )
    if fmt == "csv":
        return table.to_csv(index=False)
    if table.empty:
        return "(no runs)"
    table = findings.verdict_texts(table)
    hidden = [col for col in table if col.endswith("_std") or col in ("diverged", "repeats")]
    shown = pd.DataFrame({col: _texts(table, col) for col in table.columns.drop(hidden)})
    # a newline or escape code in a folder name or a reason would break the lines
    shown = shown.apply(lambda texts: texts.str.replace(CONTROL, _escape, regex=True))
    if fmt == "md":
        shown = shown.apply(lambda texts: texts.str.replace("|", "\\|"))
    # numbers to the right, the verdict columns' signed figures too (texts by then)
    figures = ("diff", findings.INTERVAL, "p")
    align = {col: "right" if col in figures or _is_numeric(table[col]) else "left" for col in shown}

    def text(columns: list[str]) -> str:
        out = shown[columns].to_markdown(
            index=False,
            tablefmt="pipe" if fmt == "md" else "simple",
            disable_numparse=True,  # the cells are already formatted
            colalign=[align[col] for col in columns],
        )
        return "\n".join(line.rstrip() for line in out.splitlines())

    if wide:
        return text(list(shown.columns))
    if fmt == "md":  # a file: every figure, the config named once
        return text([col for col in shown if col != "model" and col not in _keys(shown)])
    return _fitted(shown, text)


WIDTH = 120  # the text table's width unless --wide
# What the text table leaves out first where it does not fit: the run's folder, then the
# measurements least often read. The config keys are left out always (config names them).
DROPPED = (
    "run",
    "images_per_second",
    "conv_layers",
    "receptive_field",
    "macs",
    "train_seconds",
    "f1_macro",
    "paired",
    "params",
)
NAME_WIDTH = 30  # a reason cut short where the table does not fit keeps this much


def _fitted(shown: pd.DataFrame, text) -> str:
    """The text table in WIDTH columns: config first, the key columns (between model and the
    figures) and then DROPPED left out until it fits, a long reason cut short; a line
    below says what was left out."""
    columns = list(shown.columns)
    keys = _keys(shown)
    left = [col for col in columns if col not in keys and col != "model"]
    for col in DROPPED:
        if _width(text(left)) <= WIDTH:
            break
        if col in left:
            left.remove(col)
    out = text(left)
    if "reason" in left and _width(out) > WIDTH:  # a reason cut short, on its one line
        room = max(NAME_WIDTH, WIDTH - (_width(out) - shown["reason"].str.len().max()))
        cut = shown["reason"].map(lambda r: r if len(r) <= room else r[: room - 1] + "…")
        shown["reason"] = cut
        out = text(left)
    hidden = [col for col in columns if col not in left and col != "model" and col not in keys]
    hidden += [f"{len(keys)} config key{'s' * (len(keys) > 1)}"] * bool(keys)
    if hidden:
        note = f"--wide adds: {', '.join(hidden)}"
        out += "\n" + textwrap.fill(note, WIDTH)
    return out


def _keys(table: pd.DataFrame) -> list[str]:
    """The config keys' columns: after run and model, before the first figure."""
    columns = list(table.columns)
    first_figure = next((i for i, col in enumerate(columns) if col in METRICS), len(columns))
    return columns[columns.index("run") + 2 : first_figure] if "run" in columns else []


def _width(text: str) -> int:
    return max(map(len, text.splitlines()))


CONTROL = r"[\x00-\x1f\x7f]"


def _escape(match: re.Match) -> str:
    return ascii(match[0])[1:-1]  # "\n", "\x1b"


def _texts(table: pd.DataFrame, col: str) -> pd.Series:
    values = table[col].astype(object)  # an Int64 column of <NA> only could not hold ""
    digits = METRICS.get(col)
    if col == "receptive_field":
        texts = values.map(_axes_text, na_action="ignore")
    elif digits is None:
        texts = values.map(str, na_action="ignore")
    else:
        texts = values.map(lambda value: f"{value:,.{digits}f}", na_action="ignore")
    if col + "_std" in table:
        std = table[col + "_std"].map(lambda value: f" ± {value:,.{digits}f}", na_action="ignore")
        texts += std.fillna("")
    if col == "n" and "diverged" in table:
        texts += table["diverged"].map(lambda k: f", {k} diverged" if k else "")
    if col == "n" and "repeats" in table:  # a rerun of a seed: the same run, counted once
        texts += table["repeats"].map(lambda k: f" (+{k} repeat{'s' * (k != 1)})" if k else "")
    # a blank metric has no value; a blank config key is one the run does not have
    return texts.astype(object).fillna("" if col in METRICS or col == "reason" else UNSET)


# ---------------------------------------------------------------- files and plots


def write_summary(
    runs: Iterable,
    out_dir: str | os.PathLike,
    sort: str | None = None,
    baseline=None,
    metric: str = DEFAULT_METRIC,
):
    """comparison.csv, comparison.md, findings.md and two plots in out_dir; returns the
    table. `baseline`: the row the others are compared with (else the one the runs' config
    declares, a preset's `baseline`, or none: a declared one that fits none of the
    folders compared is a note in findings.md, not an error)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = [run if isinstance(run, dict) else load_run(run) for run in runs]
    note = None
    declared = declared_baseline(runs)
    try:
        seeds, grouped, keys = _tables(runs, sort, baseline or declared, metric)
        baseline = baseline or declared
    except CompareError as error:
        if baseline is not None or declared is None:
            raise
        note = f"No verdicts: the baseline the runs' presets declare does not fit them: {error}."
        seeds, grouped, keys = _tables(runs, sort, None, metric)
    table, setting = grouped.drop(columns="group"), findings.about(runs)
    # The tables first: if a plot fails, the numbers are already on disk.
    files.write_atomic(out / "comparison.csv", format_table(table, "csv"))
    images = "![accuracy vs parameters](accuracy_vs_params.png)\n\n![loss](loss_curves.png)"
    files.write_atomic(out / "comparison.md", format_table(table, "md") + "\n\n" + images + "\n")
    text = findings.findings(grouped, seeds, keys, baseline, setting, metric, note)
    files.write_atomic(out / "findings.md", text)
    # The plots show completed runs (the table has the others), named by their config
    seeds = seeds[seeds["status"] == "completed"]
    seeds = seeds.assign(panel=seeds["folder"].map(_panels(runs, set(seeds["folder"]))))
    base = grouped["group"][grouped["verdict"] == "baseline"] if "verdict" in grouped else []
    name = grouped["config"][grouped["verdict"] == "baseline"] if len(base) else None
    marked = plots.Baseline(seeds["group"].isin(base), name.iloc[0]) if len(base) else None
    plots.plot_accuracy(seeds, out / "accuracy_vs_params.png", setting, marked)
    plots.plot_losses(runs, seeds, out / "loss_curves.png", setting, marked)
    return table


def _panels(runs: list[dict], folders: set[int]) -> dict[int, str]:
    """Each of `folders` (indexes into runs) by the data set and epoch count its plot panel
    shows, where these differ among them ("ECG200, 300 epochs"; "" where they do not)."""
    said = {}
    for key, unit in (("data.name", ""), ("trainer.epochs", " epoch")):
        values = {f: runs[f]["config"].get(key) for f in folders}
        if len(set(map(str, values.values()))) > 1:
            for f, value in values.items():
                plural = "s" * (unit != "" and value != 1)
                said.setdefault(f, []).append(f"{value}{unit}{plural}")
    return {f: ", ".join(said.get(f, [])) for f in folders}


def declared_baseline(runs: list[dict]) -> str | None:
    """The baseline the runs' config declares (an experiment preset's `baseline` key), if
    they agree on one."""
    declared = {run["config"].get("baseline") for run in runs if run["config"]}
    return declared.pop() if len(declared) == 1 else None


# ---------------------------------------------------------------- entry points


def compare_command(
    paths,
    sort: str | None = None,
    fmt: str = "table",
    out=None,
    baseline: str | None = None,
    metric: str = DEFAULT_METRIC,
    wide: bool = False,
) -> int:
    """`cnnlab compare`: 0 once the table is printed (failed runs are rows, not errors),
    2 for a bad argument (--out included: checked before the table is printed), 1 if the
    files for --out could not be written. `wide`: every column of the text table."""
    try:
        runs = runs_in(paths)
        text = format_table(compare_table(runs, sort, baseline, metric), fmt, wide)
        if out is not None:
            _make_folder(out)
    except CompareError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(text)
    if out is not None:
        try:
            write_summary(runs, out, sort, baseline, metric)
        except (OSError, files.WriteError) as error:  # a folder in the way, a full disk
            print(f"error: cannot write the summary into {out}: {error}", file=sys.stderr)
            return 1
        # stderr, so that `--format json --out DIR > table.json` stays valid json
        wrote = "comparison.csv, comparison.md, findings.md and plots"
        print(f"wrote {wrote} to {out}", file=sys.stderr)
    return 0


def _make_folder(out) -> None:
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        why = error.strerror or error  # "Not a directory", "File exists"
        raise CompareError(f"--out {out}: cannot make that folder: {why}") from None


def summarize_sweep(sweep_dir: str | os.PathLike, runs: list[dict] | None = None) -> pd.DataFrame:
    """End of a multirun: the summary files into the sweep folder, the table to stdout.
    `runs`: what load_runs read there, if it was read already."""
    sweep_dir = Path(sweep_dir)
    if runs is None:
        runs = load_runs([sweep_dir]) if sweep_dir.is_dir() else []
    if not runs:
        print(f"no job folders in {sweep_dir}")
        return pd.DataFrame(columns=["run", "status"])
    table = write_summary(runs, sweep_dir)
    print(format_table(table, "table"))
    print(f"sweep summary: {sweep_dir / 'comparison.md'}")
    return table


def failed(runs: list[dict]) -> list[dict]:
    """The runs (what load_run returned) that did not complete (failed, diverged,
    interrupted, missing, ...): run (its name in the table), status and reason."""
    names = _short_names([run["path"] for run in runs])
    return [
        {"run": name, "status": run["status"], "reason": run["reason"]}
        for run, name in zip(runs, names, strict=True)
        if run["status"] != "completed"
    ]
