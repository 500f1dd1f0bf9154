"""Findings of a comparison: the verdict columns each row gains against a baseline row
(the statistics are verdicts.py's), and findings.md, the comparison in plain words, one
sentence per row: against a baseline, each row's difference with its interval and verdict;
without one, each row's accuracy with its 95% interval, and how to ask for verdicts."""

from __future__ import annotations

import pandas as pd

from cnnlab import verdicts
from cnnlab.ranges import key_values
from cnnlab.records import CompareError, canon

# ---- the verdict columns of a comparison (compare.py) ------------------------------


def settings(run: dict) -> dict:
    """A run's config keys and the groups it chose (variant=kernel3), as --baseline reads them."""
    return {**run["choices"], **run["config"]}


def with_verdicts(table: pd.DataFrame, seeds: pd.DataFrame, runs: list[dict], baseline: str):
    """The verdict columns of each completed row against the one completed row `baseline`
    names (a row that did not complete gets none)."""
    try:
        wanted = key_values("--baseline", baseline)
    except ValueError as e:
        raise CompareError(str(e)) from None
    first = seeds.groupby("group", sort=False)["folder"].first()
    # rows that did not complete have no accuracy: neither a baseline nor compared
    completed = [group for group in table.index if table.at[group, "status"] == "completed"]
    matches = [
        group
        for group in completed
        if all(canon(_value(runs[first[group]], k)) == canon(v) for k, v in wanted.items())
    ]
    if len(matches) != 1:
        found = (
            f"{len(matches)} rows of the comparison match"
            if matches
            else "no row of the comparison matches"
        )
        rows = ", ".join(table.loc[completed, "run"])
        raise CompareError(
            f"--baseline {baseline}: {found}; give KEY=VALUE pairs that name exactly one of "
            f"its rows ({rows})"
        )
    accuracy = seeds[~seeds["diverged"]].groupby("group", sort=False)
    by_seed = {group: rows.set_index("seed")["accuracy_%"] for group, rows in accuracy}
    empty = pd.Series(dtype=float)
    base = by_seed.get(matches[0], empty)
    others = [g for g in completed if g != matches[0]]
    contrasts = verdicts.holm([verdicts.contrast(base, by_seed.get(g, empty)) for g in others])
    rows = {matches[0]: verdicts.columns(None)}
    rows |= {g: verdicts.columns(c) for g, c in zip(others, contrasts, strict=True)}
    added = [*verdicts.COLUMNS, verdicts.DETECTABLE]
    found = pd.DataFrame.from_dict(rows, orient="index", columns=added)
    columns = list(table.columns)
    at = columns.index("status")
    return table.join(found)[columns[:at] + added + columns[at:]]


def _value(run: dict, key: str):
    chosen = settings(run)
    if key == "model" and key not in chosen:  # model=mlp on the command line: its name
        return chosen.get("model.name")
    return chosen.get(key)


def verdict_texts(table: pd.DataFrame) -> pd.DataFrame:
    """table and md: the verdict columns as a reader takes them in (diff, ci95, p, paired)."""
    if "verdict" not in table:
        return table

    def text(column: str, form):
        return [form(v) if pd.notna(v) else "" for v in table[column]]

    ci95 = [
        f"[{low:+.2f}, {high:+.2f}]" if pd.notna(low) else ""
        for low, high in zip(table["ci95_low"], table["ci95_high"], strict=True)
    ]
    texts = {
        "diff": text("diff", lambda v: f"{v:+.2f}"),
        "ci95": ci95,
        "p": text("p_value", lambda v: "<0.001" if v < 0.001 else f"{v:.3f}"),
        "paired": text("paired", lambda v: "paired" if v else "Welch"),
    }
    at = list(table.columns).index("diff")
    rest = table.drop(columns=[*verdicts.COLUMNS[:-1], verdicts.DETECTABLE])
    for offset, (name, values) in enumerate(texts.items()):
        rest.insert(at + offset, name, values)
    return rest


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
    """A config value as the command line writes it: false, not False; 2, not 2.0."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def findings(
    table: pd.DataFrame, seeds: pd.DataFrame, keys: list[str], baseline: str | None, about: str
) -> str:
    lines = [f"# Findings ({about})", ""]
    done = table[table["status"] == "completed"].reset_index(drop=True)
    if "verdict" in done and (done["verdict"] == "baseline").any():
        base = int((done["verdict"] == "baseline").idxmax())
        names = row_names(done, keys, base)
        compared = int(done["p_value"].notna().sum())
        named = names[base] if names[base] == baseline else f"{names[base]} (`{baseline}`)"
        lines += [
            f"Test accuracy against the baseline {named}: the difference in points, its 95% "
            f"confidence interval, and a verdict at 95% after Holm's correction over the rows "
            f"compared. The smallest detectable difference is the one these seeds would find "
            f"{verdicts.POWER:.0%} of the time.",
            "",
            f"- {names[base]} (the baseline): {accuracy_said(seeds, done['group'][base])}",
        ]
        for i, row in done.iterrows():
            if i == base:
                continue
            contrast = verdicts.Contrast(
                *(row[k] for k in verdicts.COLUMNS), n=0, detectable=row[verdicts.DETECTABLE]
            )
            n, n_base = _n(row), _n(done.iloc[base])
            seeds_text = f"{n} and {n_base} seeds" if n != n_base else f"{n} seed{'s' * (n != 1)}"
            said = verdicts.sentence(names[i], names[base], contrast, seeds_text, compared)
            lines.append(f"- {said}")
    else:
        names = row_names(done, keys)
        reason = f"`{baseline}` names no completed row" if baseline else "no baseline declared"
        lines += [
            f"Test accuracy of each row with its 95% confidence interval over its seeds "
            f"({reason}; for verdicts, compare against one row: `cnnlab compare FOLDER "
            f"--baseline KEY=VALUE`).",
            "",
        ]
        for name, group in zip(names, done["group"], strict=True):
            lines.append(f"- {name}: {accuracy_said(seeds, group)}")
    return "\n".join(lines) + "\n"


def accuracy_said(seeds: pd.DataFrame, group: str) -> str:
    """A row's test accuracy: "88.00% [87.16, 88.84] over 5 seeds" (the 95% t interval)."""
    values = seeds.loc[(seeds["group"] == group) & ~seeds["diverged"], "accuracy_%"].dropna()
    interval = verdicts.interval_of_mean(values)
    shown = f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else ""
    count = f"{len(values)} seed{'s' * (len(values) != 1)}"
    return f"{values.mean():.2f}%{shown} over {count}" if len(values) else "no accuracy"


def _n(row) -> int:
    return int(row["n"]) if "n" in row and pd.notna(row["n"]) else 1
