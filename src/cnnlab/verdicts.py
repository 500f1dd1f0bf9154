"""Is a difference real? Each row of a comparison against a baseline row: the difference
of the measurement judged (test accuracy by default, in points), a simultaneous interval,
a p-value and a verdict in words that always agree with each other.

The verdict is a Bonferroni-corrected test: over m rows compared with one baseline, each
test runs at level ALPHA / m, and the interval shown is its own 1 - ALPHA / m interval. So
a row reads `better` or `worse` exactly when its shown interval excludes 0, and the chance
that any row of the family reads so by seed noise alone stays below ALPHA (the p shown is
m x the raw p, capped at 1).

Seed s of one configuration and seed s of another draw the same batches in the same order
and start from the same weights wherever the shapes agree, so where two rows hold the same
seeds their differences are paired by seed (a paired t-test); otherwise the two means are
compared by Welch's t-test. Where the seeds have no spread at all (every paired difference
the same), a t-test has nothing to divide by: an exact test takes over (the sign test, or
the permutation test of two constant groups), whose interval is the value itself when the
test rejects and unbounded when it does not. Fewer than MIN_SEEDS on either side give no
verdict. scipy.stats does the statistics.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

ALPHA = 0.05  # the family-wise error rate of one baseline's verdicts
POWER = 0.8  # the detectable difference: one the seeds would find 4 times in 5
MIN_SEEDS = 3
SPREAD = 1e-9  # a standard error this small, relative to the difference, is float rounding
MOST_SEEDS = 100_000  # the prospective seed count stops here
VERDICTS = ("better", "worse", "inconclusive", "identical", "n too small")
COLUMNS = ("diff", "ci95_low", "ci95_high", "p_value", "paired", "verdict")
# also in csv and json: the interval's level and adjustment, the share of seed pairs in
# which the row beats the baseline, the difference its seeds detect (POWER, at the
# corrected level, from the family's pooled seed spread) and the seeds that would detect 1
EXTRA = ("ci_level", "ci_adjustment", "prob_improvement", "detectable_diff", "seeds_for_1")


@dataclass
class Contrast:
    diff: float  # mean difference (row - baseline)
    ci95_low: float | None  # the simultaneous interval (None: unbounded or no test)
    ci95_high: float | None
    p_value: float | None  # Bonferroni-corrected: m x the raw p, at most 1
    paired: bool
    verdict: str
    n: int  # seeds compared: pairs, or the smaller side
    ci_level: float | None = None
    ci_adjustment: str | None = None
    prob_improvement: float | None = None
    detectable_diff: float | None = None
    seeds_for_1: int | None = None


def family(base: pd.Series, others: list[pd.Series], m: int | None = None) -> list[Contrast]:
    """Each of `others` against `base`: values indexed by seed (NaN: a seed without one).
    One family: the correction and the pooled spread cover every row tested. `m`: the
    tests the correction covers, where the family is part of a larger one (a claim's)."""
    base = base.dropna().astype(float)
    others = [other.dropna().astype(float) for other in others]
    tested = [min(len(base), len(other)) >= MIN_SEEDS for other in others]
    m = m or max(1, sum(tested))
    contrasts = [
        _contrast(base, other, m) if ok else _too_few(base, other)
        for other, ok in zip(others, tested, strict=True)
    ]
    _power(base, others, contrasts, m)
    return contrasts


def _is_paired(base: pd.Series, other: pd.Series) -> bool:
    unique = base.index.is_unique and other.index.is_unique
    return unique and set(base.index) == set(other.index)


def _too_few(base: pd.Series, other: pd.Series) -> Contrast:
    paired = _is_paired(base, other)
    n = len(other) if paired else min(len(base), len(other))
    diff = float(other.mean() - base.mean()) if len(other) and len(base) else math.nan
    return Contrast(diff, None, None, None, paired, "n too small", n)


def _contrast(base: pd.Series, other: pd.Series, m: int) -> Contrast:
    from scipy import stats

    paired = _is_paired(base, other)
    level = 1 - ALPHA / m
    diff = float(other.mean() - base.mean())
    if paired:
        other = other.reindex(base.index)
        differences = other - base
        n, se = len(other), float(differences.std(ddof=1)) / math.sqrt(len(other))
        wins = (np.sign(differences.to_numpy()) + 1) / 2  # ties count half
        identical = bool((differences == 0).all())
    else:
        n = min(len(base), len(other))
        se = math.sqrt(other.var(ddof=1) / len(other) + base.var(ddof=1) / len(base))
        wins = (np.sign(np.subtract.outer(other.to_numpy(), base.to_numpy())) + 1) / 2
        identical = other.nunique() == base.nunique() == 1 and other.iloc[0] == base.iloc[0]
    adjustment = f"Bonferroni over {m} rows" if m > 1 else "none (one row compared)"
    found = Contrast(diff, None, None, None, paired, "", n, level, adjustment, float(wins.mean()))
    if identical:  # the same results, seed for seed: no difference, exactly
        found.ci95_low = found.ci95_high = 0.0
        found.p_value, found.verdict = 1.0, "identical"
        return found
    if se > SPREAD * max(1.0, abs(diff)):
        if paired:
            test = stats.ttest_rel(other, base)
        else:
            test = stats.ttest_ind(other, base, equal_var=False)
        interval = test.confidence_interval(level)
        raw = float(test.pvalue)
        low, high = float(interval.low), float(interval.high)
    else:  # no spread: every seed differs by the same amount, an exact test
        raw = 2 * 0.5**n if paired else 2 / math.comb(len(base) + len(other), len(base))
        raw = min(1.0, raw)
        low, high = (diff, diff) if raw < ALPHA / m else (None, None)
    found.ci95_low, found.ci95_high, found.p_value = low, high, min(1.0, m * raw)
    # the words follow the interval shown, so they can never contradict it
    excludes = low is not None and (low > 0 or high < 0)
    found.verdict = ("better" if diff > 0 else "worse") if excludes else "inconclusive"
    return found


def _power(base: pd.Series, others: list[pd.Series], contrasts: list[Contrast], m: int):
    """detectable_diff and seeds_for_1 of each tested row, from the spread pooled over the
    family (paired differences, or seeds of one configuration), not each row's own: one
    row's few seeds make a noisy estimate of it."""
    # rows identical to the baseline say nothing of the spread between configurations
    paired = [
        (other.reindex(base.index) - base) for other, c in zip(others, contrasts, strict=True)
        if c.ci_level is not None and c.paired and c.verdict != "identical"
    ]  # fmt: skip
    groups = [base] + [o for o, c in zip(others, contrasts, strict=True) if not c.paired]
    spread = {True: _pooled_variance(paired), False: _pooled_variance(groups)}
    for c in contrasts:
        if c.ci_level is None:
            continue
        variance = spread[c.paired]
        c.detectable_diff, c.seeds_for_1 = detectable(variance, c.n, c.paired, m)


def _pooled_variance(samples: list[pd.Series]) -> float:
    samples = [s for s in samples if len(s) > 1]
    df = sum(len(s) - 1 for s in samples)
    return sum((len(s) - 1) * float(s.var(ddof=1)) for s in samples) / df if df else 0.0


def detectable(variance: float, n: int, paired: bool, m: int) -> tuple[float, int]:
    """The difference n seeds (pairs, or n a side) detect with probability POWER in a
    two-sided test at ALPHA / m, and the seeds that would detect 1 (point, or unit)."""
    from scipy.special import stdtrit  # stats.t.ppf without its checks: 50x faster

    if variance == 0:  # the exact test: n agreeing seeds reject once 2 x 0.5^n < ALPHA / m
        return 0.0, math.floor(math.log2(2 * m / ALPHA)) + 1

    def found(k: int) -> float:  # the difference k seeds detect
        df = k - 1 if paired else 2 * k - 2
        z = stdtrit(df, 1 - ALPHA / (2 * m)) + stdtrit(df, POWER)
        return float(z * math.sqrt((1 if paired else 2) * variance / k))

    low, high = 2, MOST_SEEDS  # found() falls as k grows: the first k with found(k) <= 1
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if found(middle) <= 1 else (middle + 1, high)
    return found(n) if n >= 2 else math.inf, low


def columns(c: Contrast | None) -> dict:
    """A table row's verdict columns (the baseline row: blank, verdict `baseline`)."""
    if c is None:
        return dict.fromkeys((*COLUMNS, *EXTRA)) | {"verdict": "baseline"}
    fields = asdict(c)
    return {key: fields[key] for key in (*COLUMNS, *EXTRA)}


def interval_of_mean(values: pd.Series, bounds: tuple | None = (0, 100)) -> tuple | None:
    """The 95% Student's t interval of a row's mean over its seeds, cut to `bounds` (an
    accuracy's mean lies in [0, 100], so the cut loses no coverage); None with fewer than 2."""
    from scipy import stats

    values = values.dropna().astype(float)
    if len(values) < 2:
        return None
    mean = float(values.mean())
    if values.std(ddof=1) == 0:
        return mean, mean
    low, high = stats.t.interval(1 - ALPHA, len(values) - 1, mean, stats.sem(values))
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return float(low), float(high)


def sentence(name: str, baseline: str, row: dict, seeds: str, n: int, unit="points") -> str:
    """One row of findings.md in plain words; `row`: the verdict columns (json's),
    `seeds`: "5 seeds", or "5 and 3 seeds"; n: the seeds a side (pairs) compared."""
    head = f"{name} vs {baseline}: {row['diff']:+.2f} {unit}"
    verdict = row["verdict"]
    if verdict == "n too small":
        return (
            f"{head}, n too small for a verdict with {seeds} (at least {MIN_SEEDS} on each "
            f"side: train with seeds={MIN_SEEDS} or more)."
        )
    if verdict == "identical":
        return f"{name} vs {baseline}: identical results on every one of {seeds}."
    how = "paired by seed" if row["paired"] else "Welch's t-test"
    p = "p < 0.001" if row["p_value"] < 0.001 else f"p = {row['p_value']:.3f}"
    low, high = row["ci95_low"], row["ci95_high"]
    interval = f"[{low:+.2f}, {high:+.2f}]" if low is not None else "[unbounded]"
    adjusted = f", {row['ci_adjustment']}" if row["ci_adjustment"].startswith("Bonf") else ""
    said = (
        f"{head} {interval} ({row['ci_level']:.1%} interval), {verdict} with {seeds} "
        f"({how}, {p}{adjusted}); {row['prob_improvement']:.0%} of seed pairs "
        f"favour {name}"
    )
    if verdict != "inconclusive":
        return said + "."
    one = "1 point" if unit == "points" else "a difference of 1"
    return (
        f"{said}; {n} seeds detect about "
        f"{row['detectable_diff']:.1f} {unit} here; about {int(row['seeds_for_1'])} seeds would "
        f"detect {one}."
    )
