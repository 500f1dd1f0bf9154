"""compare's two plots (accuracy_vs_params.png, loss_curves.png) drawn with seaborn: the
seeds of one configuration as a mean and a standard-deviation band, the config keys that
vary told apart by hue, style and facet column. seaborn (with pandas and scipy.stats) is
imported only when a plot is drawn.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def roles_of(data: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, dict]:
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


def plot_accuracy(seeds: pd.DataFrame, keys: list[str], file: Path) -> None:
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
    save(grid, file)


def plot_losses(runs: list[dict], seeds: pd.DataFrame, keys: list[str], file: Path) -> None:
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
    grid.set_axis_labels("epoch", "validation loss" if validated else "test loss")
    for axes in grid.axes.flat:
        axes.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
    save(grid, file)


def save(grid, file: Path) -> None:
    import matplotlib.pyplot as plt

    grid.savefig(file, dpi=120)
    plt.close(grid.figure)  # pyplot keeps every open figure: a long sweep would leak them
