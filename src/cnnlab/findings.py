"""Findings of a comparison: the evidence (each configuration and seed once), the verdict
columns each row gains against the baseline row of its data set (the statistics are
verdicts.py's), and findings.md, the comparison in plain words, one sentence per row:
against a baseline, each row's difference with its interval and verdict; without one, each
row's accuracy with its 95% interval, and how to ask for verdicts."""

from __future__ import annotations

import math

import pandas as pd

from cnnlab import verdicts
from cnnlab.config import is_run_setting, key_values
from cnnlab.records import UNSET, CompareError, canon, in_points

# ---- the verdict columns of a comparison (compare.py) ------------------------------


def settings(run: dict) -> dict:
    """A run's config keys and the groups it chose (variant=kernel3), as --baseline reads them."""
    return {**run["choices"], **run["config"]}


# Rows are judged only against a baseline trained and tested alike: on the same data set
# (and split) for as long. Where the rows differ in these, each data set gets its own
# baseline row and its own verdicts. A key the --baseline names is compared across on
# purpose (trainer.epochs=5 against 10), except one that picks the test set itself.
LIKE_KEYS = ("trainer.epochs", "trainer.patience")  # and every data.* key
TEST_SET_KEYS = ("data", "ucr_set", "data.name", "data.path")


def _is_like_key(key: str) -> bool:
    return (key.startswith("data.") or key in LIKE_KEYS) and not is_run_setting(key)


def parse_baseline(baseline: str) -> dict:
    if not baseline.strip():
        raise CompareError("--baseline is empty: give KEY=VALUE pairs, e.g. model.width=1")
    try:
        return key_values("--baseline", baseline)
    except ValueError as e:
        raise CompareError(str(e)) from None


def with_verdicts(
    table: pd.DataFrame, seeds: pd.DataFrame, runs: list[dict], baseline: str, metric: str
):
    """The verdict columns of each completed row against the completed row `baseline`
    names on its data set (a row that did not complete gets none): each data set one
    family of verdicts (verdicts.family)."""
    wanted = parse_baseline(baseline)
    first = seeds.groupby("group", sort=False)["folder"].first()
    run_of = {group: runs[first[group]] for group in table.index}
    # rows that did not complete have no accuracy: neither a baseline nor compared
    completed = [group for group in table.index if table.at[group, "status"] == "completed"]
    within = _data_sets(completed, run_of, wanted, baseline)

    def matches(groups):
        return [
            g for g in groups
            if all(canon(_value(run_of[g], k)) == canon(v) for k, v in wanted.items())
        ]  # fmt: skip

    bases = {
        label: matches([g for g in completed if within[g] == label]) for label in within.values()
    }
    if not any(bases.values()) or any(len(found) > 1 for found in bases.values()):
        raise CompareError(_no_single_row(table, completed, matches, bases, baseline))
    by_seed = {
        group: rows.set_index("seed")["metric"]
        for group, rows in seeds[~seeds["diverged"]].groupby("group", sort=False)
    }
    empty = pd.Series(dtype=float)
    rows = {}
    for label, found in bases.items():
        if not found:  # no baseline on this data set: its rows get no verdict
            continue
        others = [g for g in completed if within[g] == label and g != found[0]]
        contrasts = verdicts.family(
            by_seed.get(found[0], empty), [by_seed.get(g, empty) for g in others]
        )
        rows[found[0]] = verdicts.columns(None)
        rows |= {g: verdicts.columns(c) for g, c in zip(others, contrasts, strict=True)}
    added = [*verdicts.COLUMNS, *verdicts.EXTRA]
    found = pd.DataFrame.from_dict(rows, orient="index", columns=added)
    found = found.reindex(table.index)
    found["metric"] = metric
    found["within"] = pd.Series(within).reindex(table.index)
    columns = list(table.columns)
    at = columns.index("status")
    return table.join(found)[columns[:at] + list(found.columns) + columns[at:]]


def _no_single_row(table, completed, matches, bases, baseline) -> str:
    several = [found for found in bases.values() if len(found) > 1]
    if several:
        said = f"{len(several[0])} rows of the comparison match"
        if len(bases) > 1:
            said += " on one data set"
    else:
        failed = matches([g for g in table.index if g not in completed])
        if failed:
            named = ", ".join(f"{table.at[g, 'run']} ({table.at[g, 'status']})" for g in failed)
            return (
                f"--baseline {baseline}: only rows that did not complete match ({named}): "
                f"a baseline needs a completed run"
            )
        said = "no row of the comparison matches"
    rows = ", ".join(table.loc[completed, "run"])
    return (
        f"--baseline {baseline}: {said}; give KEY=VALUE pairs that name exactly one of its "
        f"rows ({rows})"
    )


def _data_sets(completed: list, run_of: dict, wanted: dict, baseline: str) -> dict:
    """Each completed row's data set (and training length) where the rows differ in them:
    "ECG200", "digits, 5 epochs"; "" where they all agree."""
    likes = {
        g: {k: v for k, v in settings(run_of[g]).items() if _is_like_key(k)} for g in completed
    }
    for key in wanted:
        if key in TEST_SET_KEYS and len({canon(_value(run_of[g], key)) for g in completed}) > 1:
            raise CompareError(
                f"--baseline {baseline}: {key} picks the test set, and accuracies on different "
                f"test sets are never compared; leave {key} out to get a verdict per data set"
            )
    keys = dict.fromkeys(k for like in likes.values() for k in like if k not in wanted)
    differing = [k for k in keys if len({canon(like.get(k)) for like in likes.values()}) > 1]
    # named by the data set and epochs alone where they tell the families apart (the keys
    # of one source, data.test_size, differ with the data set)
    short = [k for k in differing if k in ("data.name", "trainer.epochs")]

    def label(g, keys):
        return ", ".join(_like_text(k, likes[g].get(k)) for k in keys)

    full = {g: label(g, differing) for g in completed}
    brief = {g: label(g, short) for g in completed}
    distinct = len(set(brief.values())) == len(set(full.values()))
    return brief if short and distinct else full


def _like_text(key: str, value) -> str:
    if key == "data.name":
        return _shown(value)
    if key == "trainer.epochs":
        return f"{_shown(value)} epoch{'s' * (value != 1)}"
    return f"{key}={_shown(value)}"


# a seed's figures; two copies of one (configuration, seed) trained alike must agree in them
# and in `diverged`: training is deterministic
FIGURES = ["accuracy_%", "f1_macro", "val_accuracy_%", "metric"]


def one_per_seed(seeds: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Each (configuration, seed) once: the unit of evidence is one training run, and a
    rerun of a seed is the same run again. `repeats` counts the copies left out. Copies
    trained alike (stacks of as many seeds) that disagree are refused, naming both folders;
    a seed trained alone and in a stack may differ by a test image (float sums in another
    order): it counts once, as the mean of its copies."""
    known = seeds["seed"].notna()
    twice = (
        seeds[known]
        .duplicated(["group", "seed"], keep=False)
        .reindex(seeds.index, fill_value=False)
    )
    for (_, seed, _), copies in seeds[twice].groupby(["group", "seed", "stack"], sort=False):
        figures = copies[["diverged", *FIGURES]].astype(object)
        figures = figures.where(copies[["diverged", *FIGURES]].notna(), None)
        if len({tuple(row) for row in figures.itertuples(index=False)}) > 1:
            first, other = (names[f] for f in copies["folder"].iloc[:2])
            raise CompareError(
                f"seed {seed} of one configuration has different results in {first} and "
                f"{other}: training is deterministic, so these are not the same run (a "
                f"changed code or machine?); compare them apart"
            )
    seeds = seeds.copy()
    copies = seeds[twice].groupby(["group", "seed"], sort=False)
    seeds.loc[twice, FIGURES] = copies[FIGURES].transform("mean")
    seeds.loc[twice, "diverged"] = copies["diverged"].transform("all")
    repeated = twice & seeds.duplicated(["group", "seed"])
    counts = repeated.groupby(seeds["group"], sort=False).sum()
    return seeds[~repeated].assign(repeats=lambda f: f["group"].map(counts).fillna(0).astype(int))


def _value(run: dict, key: str):
    chosen = settings(run)
    if key == "model" and key not in chosen:  # model=mlp on the command line: its name
        return chosen.get("model.name")
    return chosen.get(key)


def verdict_texts(table: pd.DataFrame) -> pd.DataFrame:
    """table and md: the verdict columns as a reader takes them in (diff, the simultaneous
    interval, p, paired); json and csv keep them all as numbers."""
    if "verdict" not in table:
        return table

    def text(column: str, form):
        return [form(v) if pd.notna(v) else "" for v in table[column]]

    interval = [
        f"[{low:+.2f}, {high:+.2f}]" if pd.notna(low) else "[unbounded]" if pd.notna(p) else ""
        for low, high, p in zip(
            table["ci95_low"], table["ci95_high"], table["p_value"], strict=True
        )
    ]
    texts = {
        "diff": text("diff", lambda v: f"{v:+.2f}"),
        INTERVAL: interval,
        "p": text("p_value", lambda v: "<0.001" if v < 0.001 else f"{v:.3f}"),
        "paired": text("paired", lambda v: "paired" if v else "Welch"),
    }
    at = list(table.columns).index("diff")
    rest = table.drop(columns=[*verdicts.COLUMNS[:-1], *verdicts.EXTRA, "metric", "within"])
    for offset, (name, values) in enumerate(texts.items()):
        rest.insert(at + offset, name, values)
    return rest


# the table's and md's name of the interval: simultaneous over the rows compared (95%
# for all of them together, Bonferroni), as json's ci_level and ci_adjustment say
INTERVAL = "sim. 95% CI"


# ---- findings.md -----------------------------------------------------------------------


def about(runs: list[dict]) -> str:
    """What the runs trained on, for titles: "digits, 5 epochs" (what they agree on)."""
    configs = [run["config"] for run in runs if run["status"] == "completed" and run["config"]]
    parts = []
    for key, unit in (("data.name", ""), ("trainer.epochs", " epoch")):
        values = {str(config.get(key)) for config in configs}
        if len(values) != 1:
            parts.append(f"several {key}")
            continue
        value = values.pop()
        parts.append(value + (unit + "s" * (value != "1") if unit else ""))
    return ", ".join(parts)


def row_names(table: pd.DataFrame, keys: list[str], base: int | None = None) -> list[str]:
    """Each row as a reader names it: its variant (variant=kernel3) where the runs chose
    one, else its model where models differ, else the keys that set it apart from the
    baseline row (all the varying keys without one)."""
    if "variant" in keys:
        return [f"variant={v}" for v in table["variant"]]
    if table["model"].nunique() > 1:
        return list(table["model"].astype(str))
    names = []
    for i in range(len(table)):
        row = table.iloc[i]
        apart = [k for k in keys if base is None or _shown(row[k]) != _shown(table.iloc[base][k])]
        names.append(", ".join(f"{k}={_shown(row[k])}" for k in apart or keys) or str(row["run"]))
    return names


def _shown(value) -> str:
    """A config value as the command line writes it: false, not False; 2, not 2.0; a key
    a run lacks as the table's `-`."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return UNSET
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def findings(
    table: pd.DataFrame,
    seeds: pd.DataFrame,
    keys: list[str],
    baseline: str | None,
    about: str,
    metric: str = "accuracy",
    note: str | None = None,
) -> str:
    """findings.md: against a baseline, one section per data set where the rows differ in
    it (each sentence naming it); else each row's interval. `note`: why a declared baseline
    was not used."""
    lines = [f"# Findings ({about})", ""] + ([note, ""] if note else [])
    done = table[table["status"] == "completed"].reset_index(drop=True)
    what = "Test accuracy" if metric == "accuracy" else f"`{metric}`"
    unit = "points" if in_points(metric) else "(its own units)"
    if "verdict" in done and (done["verdict"] == "baseline").any():
        lines += [
            f"{what} against the baseline `{baseline}`: the difference in {unit}, its "
            f"simultaneous 95% interval (Bonferroni: each of the m rows compared with one "
            f"baseline at 95% / m, so all of them hold together 95% of the time), and a "
            f"verdict that reads better or worse exactly when that interval excludes 0. "
            f"Where it is inconclusive: the difference these seeds detect {verdicts.POWER:.0%} "
            f"of the time, from the seed spread pooled over the rows, and the seeds that "
            f"would detect 1. The baseline's own figure: a 95% t interval over its seeds.",
            "",
        ]
        labels = list(dict.fromkeys(done["within"].fillna("")))
        for label in labels:
            part = done[done["within"].fillna("") == label].reset_index(drop=True)
            if len(labels) > 1:
                lines += [f"## {label}", ""]
            lines += _family_lines(part, seeds, keys, baseline, label if len(labels) > 1 else "")
            lines.append("")
    else:
        reason = f"`{baseline}` names no completed row" if baseline else "no baseline declared"
        lines += [
            f"{what} of each row with its 95% t interval over its seeds ({reason}; for "
            f"verdicts, compare against one row: `cnnlab compare FOLDER --baseline "
            f"KEY=VALUE`).",
            "",
        ]
        for name, i in zip(row_names(done, keys), range(len(done)), strict=True):
            named = name + _on(done.iloc[i], keys, name)
            lines.append(f"- {named}: {accuracy_said(seeds, done['group'][i], metric)}")
        lines.append("")
    lines += [
        f"- {row['run']}: no verdict: {row['status']}"
        + (f" ({row['reason']})" if pd.notna(row.get("reason")) and row.get("reason") else "")
        for _, row in table[table["status"] != "completed"].iterrows()
    ]
    return "\n".join(lines).rstrip("\n") + "\n"


def _family_lines(part, seeds, keys, baseline, label) -> list[str]:
    on = f" on {label}" if label else ""
    if not (part["verdict"] == "baseline").any():
        return [f"- no row{on} matches `{baseline}`: its {len(part)} rows have no verdict."]
    metric = part["metric"].iloc[0]
    unit = "points" if in_points(metric) else ""
    base = int((part["verdict"] == "baseline").idxmax())
    names = row_names(part, keys, base)
    n_base = _n(part.iloc[base])
    lines = [
        f"- {names[base]}{on} (the baseline): {accuracy_said(seeds, part['group'][base], metric)}"
    ]
    for i, row in part.iterrows():
        if i == base:
            continue
        n = _n(row)
        seeds_text = f"{n} and {n_base} seeds" if n != n_base else f"{n} seed{'s' * (n != 1)}"
        said = verdicts.sentence(
            names[i] + on, names[base], row.to_dict(), seeds_text, min(n, n_base), unit
        )
        lost = int(row["diverged"]) if "diverged" in row and pd.notna(row["diverged"]) else 0
        if lost:
            said += f" {lost} of {n + lost} seeds diverged: judged on {n}."
        lines.append(f"- {said}")
    return lines


def _on(row, keys: list[str], name: str) -> str:
    """ " on ECG200, 300 epochs" where the rows differ in data set or epochs."""
    parts = [k for k in ("data.name", "trainer.epochs") if k in keys and k not in name]
    return " on " + ", ".join(_like_text(k, row[k]) for k in parts) if parts else ""


def accuracy_said(seeds: pd.DataFrame, group: str, metric: str = "accuracy") -> str:
    """A row's figure: "88.00% [87.16, 88.84] over 5 seeds" (the 95% t interval, cut to
    [0, 100] for an accuracy)."""
    values = seeds.loc[(seeds["group"] == group) & ~seeds["diverged"], "metric"].dropna()
    points = in_points(metric)
    interval = verdicts.interval_of_mean(values, (0, 100) if points else None)
    shown = f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else ""
    count = f"{len(values)} seed{'s' * (len(values) != 1)}"
    percent = "%" if points else ""
    return f"{values.mean():.2f}{percent}{shown} over {count}" if len(values) else "no value"


def _n(row) -> int:
    return int(row["n"]) if "n" in row and pd.notna(row["n"]) else 1
