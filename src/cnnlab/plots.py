"""compare's two plots (accuracy_vs_params.png, loss_curves.png) drawn with seaborn: the
seeds of one configuration as a mean and a 95% confidence interval (Student's t over the
seeds, as verdicts.py computes it), the config keys that vary told apart by hue, style and
facet column, each plot titled with what was trained and what its bars mean. seaborn is
imported only when a plot is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cnnlab.verdicts import interval_of_mean


@dataclass
class Baseline:
    """The baseline row's seeds (a mask over the seed rows) and how it was named."""

    rows: pd.Series
    name: str


def roles_of(data: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, dict]:
    """seaborn's hue, style and facet column for the varied keys. A fourth key and beyond
    join the hue, so that no two configurations are ever averaged together. One key is both
    hue and style: a colour and a marker each, so points that fall together stay apart."""
    data = data.assign(**{key: data[key].map(str) for key in keys})  # lists, None: labels
    roles = dict(zip(("style", "col"), keys[1:3], strict=False))
    hue_keys = keys[:1] + keys[3:]
    if hue_keys:
        roles["hue"] = ", ".join(hue_keys)
        data[roles["hue"]] = data[hue_keys].agg(", ".join, axis=1)
    if len(keys) == 1 and len(data):  # (seaborn cannot style an empty plot)
        roles["style"] = roles["hue"]
    # a marker per style where there is one (most points stand alone), else dots
    roles |= {"markers": True, "dashes": False} if "style" in roles else {"marker": "o"}
    return data, roles


def ci95(values, bounds=None) -> tuple[float, float]:
    """seaborn's error bar: the t interval of the mean (one seed: the value itself), cut to
    `bounds`."""
    interval = interval_of_mean(pd.Series(values), bounds)
    return interval if interval else (float(np.mean(values)), float(np.mean(values)))


def accuracy_ci95(values) -> tuple[float, float]:
    """An accuracy's bar: within [0, 100], as findings.md gives it."""
    return ci95(values, (0, 100))


# What both plots share: lines over seeds as mean and 95% confidence interval.
PLOT = {"kind": "line", "errorbar": ci95, "legend": "full", "height": 4, "aspect": 1.3}
X_LABELS = {"params": "parameters", "macs": "MACs per input"}


def seeds_said(seeds: pd.DataFrame) -> str:
    """ "over 5 seeds", or "over 2-5 seeds" where configurations have different counts."""
    counts = seeds[~seeds["diverged"]].groupby("group").size()
    low, high = (int(counts.min()), int(counts.max())) if len(counts) else (0, 0)
    many = f"{low}-{high}" if low != high else str(low)
    return f"over {many} seed{'s' * (high != 1)}"


def plot_accuracy(
    seeds: pd.DataFrame, keys: list[str], file: Path, about: str, baseline: Baseline | None
) -> None:
    import seaborn as sns
    from matplotlib.ticker import EngFormatter

    data, roles = roles_of(seeds.dropna(subset=["params", "accuracy_%"]), keys)
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
        alpha=0.85,
        **(PLOT | {"errorbar": accuracy_ci95}),
        **roles,
    )
    grid.set_axis_labels("", "test accuracy (%)")
    # each row of panels says its measure on its own x axis, so no "x = params" titles
    grid.set_titles(template="{col_var} = {col_name}" if "col" in roles else "")
    level = seeds.loc[baseline.rows, "accuracy_%"].mean() if baseline is not None else None
    for measure, row in zip(measures, grid.axes, strict=True):
        for axes in row:
            axes.set_xlabel(X_LABELS[measure])
            axes.xaxis.set_major_formatter(EngFormatter())  # 50 k, 1 M
            if level is not None and not np.isnan(level):
                axes.axhline(level, color="0.4", linestyle="--", linewidth=1, zorder=0)
                axes.annotate(
                    f"baseline: {baseline.name}", (0.01, level), xycoords=("axes fraction", "data"),
                    xytext=(0, 3), textcoords="offset points", fontsize=8, color="0.3",
                )  # fmt: skip
    title = f"Test accuracy against size: {about}\nbars: 95% CI {seeds_said(seeds)}"
    grid.figure.suptitle(title)
    grid.tight_layout()  # room for the title and the upper row's x labels
    save(grid, file)


def plot_losses(runs: list[dict], seeds: pd.DataFrame, keys: list[str], file: Path, about: str):
    import seaborn as sns

    columns = seeds.drop_duplicates("folder").set_index("folder")[keys].map(str)
    histories = [runs[f]["history"].assign(**columns.loc[f].to_dict()) for f in columns.index]
    # runs that held a validation split out evaluated on it each epoch, not on the test set
    validated = bool(histories) and all("val_loss" in h for h in histories)
    loss = "val_loss" if validated else "test_loss"
    curves = [pd.DataFrame(columns=["epoch", loss]), *histories]  # empty plot if no history
    data = pd.concat(curves, ignore_index=True)
    # only points: a line through a diverged (inf) or garbled (NaN) value has none there
    points = data[["epoch", loss]].apply(pd.to_numeric, errors="coerce").abs()
    data, roles = roles_of(data[(points < float("inf")).all(axis=1)], keys)
    # the seeds of one configuration (runs, or seeds in one run) become a mean and a band
    grid = sns.relplot(data, x="epoch", y=loss, **PLOT, **roles)
    said = "validation loss" if validated else "test loss"
    grid.set_axis_labels("epoch", said)
    for axes in grid.axes.flat:
        axes.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
    grid.figure.suptitle(
        f"{said.capitalize()} per epoch: {about}\nbands: 95% CI {seeds_said(seeds)}"
    )
    grid.tight_layout()
    save(grid, file)


def save(grid, file: Path) -> None:
    import matplotlib.pyplot as plt

    grid.savefig(file, dpi=120)
    plt.close(grid.figure)  # pyplot keeps every open figure: a long sweep would leak them
