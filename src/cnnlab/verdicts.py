"""Is a difference real? Each row of a comparison against a baseline row: the difference
in test accuracy (points), its 95% confidence interval, a p-value corrected for the number
of rows compared (Holm), and a verdict in words.

Seed s of one configuration and seed s of another draw the same batches in the same order
and start from the same weights wherever the shapes agree, so where two rows hold the same
seeds their differences are paired by seed (a paired t-test: less noisy than the
difference of two means); otherwise the two means are compared by Welch's t-test. Fewer
than MIN_SEEDS on either side give no verdict. scipy.stats does the statistics.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import pandas as pd

ALPHA = 0.05  # 95% intervals; a verdict needs a Holm-corrected p below this
POWER = 0.8  # the smallest detectable difference: one the seeds would find 4 times in 5
MIN_SEEDS = 3
SPREAD = 1e-9  # a standard error this small, relative to the difference, is float rounding
VERDICTS = ("better", "worse", "no detectable difference", "n too small")
COLUMNS = ("diff", "ci95_low", "ci95_high", "p_value", "paired", "verdict")
# also in csv and json: the smallest difference the row's seeds would detect (points)
DETECTABLE = "detectable_diff"


@dataclass
class Contrast:
    diff: float  # mean difference, accuracy points (row - baseline)
    ci95_low: float | None
    ci95_high: float | None
    p_value: float | None  # Holm-corrected (contrast() gives it uncorrected)
    paired: bool
    verdict: str
    n: int  # seeds compared: pairs, or the smaller side
    detectable: float | None  # the smallest difference these seeds would detect (POWER)


def contrast(base: pd.Series, other: pd.Series) -> Contrast:
    """`other` against `base`: accuracies (points) indexed by seed. The verdict is left to
    holm(), which sees every row compared."""
    from scipy import stats

    base, other = base.dropna().astype(float), other.dropna().astype(float)
    unique = base.index.is_unique and other.index.is_unique
    paired = unique and set(base.index) == set(other.index)
    diff = float(other.mean() - base.mean())
    n = len(other) if paired else min(len(base), len(other))
    if min(len(base), len(other)) < MIN_SEEDS:
        return Contrast(diff, None, None, None, paired, "n too small", n, None)
    if paired:
        other = other.reindex(base.index)
        differences = other - base
        se, df = float(differences.std(ddof=1)) / math.sqrt(n), n - 1
    else:
        se = math.sqrt(other.var(ddof=1) / len(other) + base.var(ddof=1) / len(base))
        df = len(base) + len(other) - 2
    # a spread of float rounding (every seed 1.0 point apart, give or take 1e-15) is none
    spread = se > SPREAD * max(1.0, abs(diff))
    if spread and paired:
        test = stats.ttest_rel(other, base)
    elif spread:
        test = stats.ttest_ind(other, base, equal_var=False)
        df = float(test.df)
    else:
        test, se = None, 0.0
    if test is None:  # no spread at all: the difference is exact
        low = high = diff
        p_value = 1.0 if diff == 0 else 0.0
    else:
        interval = test.confidence_interval(1 - ALPHA)
        low, high, p_value = float(interval.low), float(interval.high), float(test.pvalue)
    detectable = (stats.t.ppf(1 - ALPHA / 2, df) + stats.t.ppf(POWER, df)) * se
    return Contrast(diff, low, high, p_value, paired, "", n, float(detectable))


def holm(contrasts: list[Contrast]) -> list[Contrast]:
    """Holm's step-down correction over the contrasts that have a p-value, and each one's
    verdict at ALPHA: the smallest p is multiplied by m, the next by m - 1, ..., each kept
    at least as large as the one before (so the order of the p-values stays)."""
    tested = sorted((c for c in contrasts if c.p_value is not None), key=lambda c: c.p_value)
    running = 0.0
    for rank, c in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * c.p_value))
        c.p_value = running
        if running < ALPHA:
            c.verdict = "better" if c.diff > 0 else "worse"
        else:
            c.verdict = "no detectable difference"
    return contrasts


def columns(c: Contrast | None) -> dict:
    """A table row's verdict columns (the baseline row: blank, verdict `baseline`)."""
    if c is None:
        return dict.fromkeys((*COLUMNS, DETECTABLE)) | {"verdict": "baseline"}
    fields = asdict(c)
    return {key: fields[key] for key in COLUMNS} | {DETECTABLE: c.detectable}


def interval_of_mean(values: pd.Series) -> tuple[float, float] | None:
    """The 95% t interval of a row's mean over its seeds (None with fewer than 2)."""
    from scipy import stats

    values = values.dropna().astype(float)
    if len(values) < 2:
        return None
    if values.std(ddof=1) == 0:
        return float(values.mean()), float(values.mean())
    low, high = stats.t.interval(1 - ALPHA, len(values) - 1, values.mean(), stats.sem(values))
    return float(low), float(high)


def sentence(name: str, baseline: str, c: Contrast, seeds: str, compared: int) -> str:
    """One row of findings.md in plain words; `seeds`: "5 seeds", or "5 and 3 seeds"."""
    head = f"{name} vs {baseline}: {c.diff:+.2f} points"
    if c.verdict == "n too small":
        return (
            f"{head}, n too small for a verdict with {seeds} (at least {MIN_SEEDS} on each "
            f"side: train with seeds={MIN_SEEDS} or more)."
        )
    how = "paired by seed" if c.paired else "Welch's t-test"
    p = "p < 0.001" if c.p_value < 0.001 else f"p = {c.p_value:.3f}"
    holm_note = f" after Holm's correction over {compared} rows" if compared > 1 else ""
    said = (
        f"{head} [{c.ci95_low:+.2f}, {c.ci95_high:+.2f}], {c.verdict} with {seeds} "
        f"({how}, {p}{holm_note})"
    )
    if c.detectable == 0:
        return f"{said}; the seeds gave identical results."
    return f"{said}; a difference of about {c.detectable:.1f} points would be detectable."
