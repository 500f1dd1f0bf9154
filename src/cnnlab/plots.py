"""compare's two plots (accuracy_vs_params.png, loss_curves.png) drawn with seaborn: the
seeds of one configuration as a mean and a 95% confidence interval (Student's t over the
seeds, as verdicts.py computes it), a colour per configuration named by its config name
(the baseline black), a panel per data set and epoch count where these differ, each titled
with what was trained and what its bars mean. seaborn is imported only when a plot is drawn.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cnnlab.verdicts import interval_of_mean


@dataclass
class Baseline:
    """The baseline row's seeds (a mask over the seed rows) and its config name."""

    rows: pd.Series
    name: str


LABEL = 30  # legend labels are wrapped to lines of at most this many characters
WIDTH = 13.0  # inches at DPI: a plot is at most 1560 px wide
DPI = 120
LEGEND = 2.8  # inches beside the panels for the legend
MARKED_EPOCHS = 30  # loss curves of at most this many epochs mark each epoch


def roles_of(data: pd.DataFrame, baseline: Baseline | None) -> tuple[pd.DataFrame, dict]:
    """seaborn's roles: a colour per configuration (its config name, wrapped to LABEL, the
    baseline's in black and first), a panel per data set and epoch count where these differ
    (`panel`). Sizes that keep the plot within WIDTH."""
    if not len(data):  # (seaborn cannot colour an empty plot)
        return data, {"height": 3.6, "aspect": 1.3}
    data = data.assign(config=data["config"].map(label))
    order = list(dict.fromkeys(data["config"]))
    palette = dict(zip(order, sns_palette(len(order)), strict=True))
    if baseline is not None:
        marked = label(baseline.name + " (baseline)")
        data.loc[baseline.rows.reindex(data.index, fill_value=False), "config"] = marked
        order = [marked, *(name for name in order if name != label(baseline.name))]
        palette = {marked: "black", **{name: palette[name] for name in order[1:]}}
    panels = data["panel"].nunique()
    roles = {"hue": "config", "hue_order": order, "palette": palette}
    if panels > 1:
        roles |= {"col": "panel", "col_order": list(dict.fromkeys(data["panel"]))}
    height = 3.6
    roles |= {"height": height, "aspect": min(1.3, (WIDTH - LEGEND) / (panels * height))}
    return data, roles


def label(name: str) -> str:
    return textwrap.fill(str(name), LABEL, break_long_words=True)


def sns_palette(n: int) -> list:
    import seaborn as sns

    return sns.color_palette("tab10" if n <= 10 else "husl", n)


def ci95(values, bounds=None) -> tuple[float, float]:
    """seaborn's error bar: the t interval of the mean (one seed: the value itself), cut to
    `bounds`."""
    interval = interval_of_mean(pd.Series(values), bounds)
    return interval if interval else (float(np.mean(values)), float(np.mean(values)))


def accuracy_ci95(values) -> tuple[float, float]:
    """An accuracy's bar: within [0, 100], as findings.md gives it."""
    return ci95(values, (0, 100))


# What both plots share: lines over seeds as mean and 95% confidence interval.
PLOT = {"kind": "line", "errorbar": ci95, "legend": "full"}
X_LABELS = {"params": "parameters", "macs": "MACs per input"}


def seeds_said(seeds: pd.DataFrame) -> str:
    """ "over 5 seeds", or "over 2-5 seeds" where configurations have different counts."""
    counts = seeds[~seeds["diverged"]].groupby("group").size()
    low, high = (int(counts.min()), int(counts.max())) if len(counts) else (0, 0)
    many = f"{low}-{high}" if low != high else str(low)
    return f"over {many} seed{'s' * (high != 1)}"


def plot_accuracy(seeds: pd.DataFrame, file: Path, about: str, baseline: Baseline | None) -> None:
    import seaborn as sns
    from matplotlib.ticker import EngFormatter

    data, roles = roles_of(seeds.dropna(subset=["params", "accuracy_%"]), baseline)
    if "hue" in roles:  # a marker each too: points that fall together stay apart
        roles |= {"style": "config", "markers": True, "dashes": False}
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
    grid.set_titles(template="{col_name}" if "col" in roles else "")
    base = data[data["config"] == roles["hue_order"][0]] if baseline is not None else None
    for measure, row in zip(measures, grid.axes, strict=True):
        for axes in row:
            axes.set_xlabel(X_LABELS[measure])
            axes.xaxis.set_major_formatter(EngFormatter())  # 50 k, 1 M
            title = axes.get_title()
            level = base if base is None or not title else base[base["panel"] == title]
            if level is not None and len(level):  # the baseline's level, named in the legend
                mean = level["accuracy_%"].mean()
                axes.axhline(mean, color="black", linestyle="--", linewidth=1, zorder=0)
    title = f"Test accuracy against size: {about}\nbars: 95% CI {seeds_said(seeds)}"
    grid.figure.suptitle(title)
    grid.tight_layout()  # room for the title and the upper row's x labels
    save(grid, file)


def plot_losses(runs: list[dict], seeds: pd.DataFrame, file: Path, about: str, baseline=None):
    import seaborn as sns

    columns = seeds.drop_duplicates("folder").set_index("folder")[["config", "panel", "group"]]
    histories = [runs[f]["history"].assign(**columns.loc[f].to_dict()) for f in columns.index]
    # runs that held a validation split out evaluated on it each epoch, not on the test set
    validated = bool(histories) and all("val_loss" in h for h in histories)
    loss = "val_loss" if validated else "test_loss"
    empty = pd.DataFrame(columns=["epoch", loss, "config", "panel", "group"])
    data = pd.concat([empty, *histories], ignore_index=True)  # empty plot if no history
    # only points: a line through a diverged (inf) or garbled (NaN) value has none there
    points = data[["epoch", loss]].apply(pd.to_numeric, errors="coerce").abs()
    data = data[(points < float("inf")).all(axis=1)]
    if baseline is not None:  # the baseline's folders, from its seed rows
        baseline = Baseline(data["group"].isin(seeds.loc[baseline.rows, "group"]), baseline.name)
    data, roles = roles_of(data.reset_index(drop=True), baseline)
    epochs = pd.to_numeric(data["epoch"]).max() if len(data) else 0
    marked = {"marker": "o"} if epochs <= MARKED_EPOCHS else {}
    # the seeds of one configuration (runs, or seeds in one run) become a mean and a band
    grid = sns.relplot(data, x="epoch", y=loss, **PLOT, **roles, **marked)
    said = "validation loss" if validated else "test loss"
    grid.set_axis_labels("epoch", said)
    grid.set_titles(template="{col_name}" if "col" in roles else "")
    for axes in grid.axes.flat:
        whole_epochs(axes)
        for line in axes.get_lines():  # the baseline on top of the bands that hide it
            if line.get_color() == "black":
                line.set(zorder=3, linewidth=2)
    grid.figure.suptitle(
        f"{said.capitalize()} per epoch: {about}\nbands: 95% CI {seeds_said(seeds)}"
    )
    grid.tight_layout()
    save(grid, file)


def whole_epochs(axes) -> None:
    """Epochs are whole numbers: a few are each a tick (one epoch alone is not 0.96-1.04)."""
    from matplotlib.ticker import MaxNLocator

    low, high = axes.dataLim.intervalx
    if high - low < 12 and np.isfinite(low):
        axes.set_xticks(range(int(low), int(high) + 1))
        axes.set_xlim(low - 0.5, high + 0.5)
    else:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def save(grid, file: Path) -> None:
    import matplotlib.pyplot as plt

    grid.savefig(file, dpi=DPI)
    plt.close(grid.figure)  # pyplot keeps every open figure: a long sweep would leak them
