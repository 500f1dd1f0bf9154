"""Do compare's verdicts keep their word? Family-wise false positives and power, from real runs.

    python benchmarks/aa_false_positives.py [--out outputs/bench/aa] [--seeds 40] [--epochs 3]

Trains two configurations of LeNet-5 on digits, ReLU and GELU, each as one `cnnlab train`
of --seeds seeds trained together (one CPU thread), and keeps every seed's test accuracy in
OUT/accuracies.json: a rerun with the same settings reads them back instead of training.
Then it resamples families such as `cnnlab compare --baseline` judges, each row 5 seeds
(verdicts.family, the code compare runs):

- A/A: a baseline and 3 or 7 rows all drawn from one configuration, each from seeds of its
  own, so no row truly differs. Paired (seeds matched by position, as compare pairs seed
  s with seed s) and Welch (unmatched). The family-wise false-positive rate is the share
  of families in which any row reads `better` or `worse`; Bonferroni holds it at or below
  5%, and the script exits 1 if it is above.
- A/B: a ReLU baseline, one GELU row paired by seed (the same seeds: the real pairing),
  and A/A ReLU rows to make 3 or 7: how often the GELU row reads `better` (the power),
  against what the words predict from the seed spread (a noncentral t at the corrected
  level), and the median `detectable_diff` and `seeds_for_1` the findings would print.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # a source checkout

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from cnnlab import verdicts  # noqa: E402

CONFIGS = {"relu": "model.activation=relu", "gelu": "model.activation=gelu"}
SEEDS_PER_ROW = 5


def accuracies(out: Path, seeds: int, epochs: int) -> dict[str, np.ndarray]:
    """Each configuration's test accuracy (points) per seed 0..seeds-1, trained or cached."""
    cache = out / "accuracies.json"
    settings = {"seeds": seeds, "epochs": epochs, "configs": CONFIGS}
    if cache.exists():
        saved = json.loads(cache.read_text())
        if saved["settings"] == settings:
            return {name: np.array(values) for name, values in saved["accuracy"].items()}
    found = {}
    for name, override in CONFIGS.items():
        run = out / name
        command = [
            sys.executable, "-m", "cnnlab", "train", override, "data=digits", "device=cpu",
            "seed=0", f"seeds={seeds}", f"trainer.epochs={epochs}", "pictures=false",
            "trainer.threads=1", "trainer.progress=false", f"hydra.run.dir={run}",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
        print(f"training {name}: {seeds} seeds, {epochs} epochs ...", flush=True)
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
        metrics = json.loads((run / "metrics.json").read_text())
        copies = sorted(metrics["per_seed"], key=lambda copy: copy["seed"])
        found[name] = [100 * copy["accuracy"] for copy in copies]
    cache.write_text(json.dumps({"settings": settings, "accuracy": found}, indent=1))
    return {name: np.array(values) for name, values in found.items()}


def aa_rate(pool: np.ndarray, rows: int, paired: bool, families: int, rng) -> float:
    """The share of A/A families with any row `better` or `worse`."""
    alarms = 0
    for _ in range(families):
        drawn = rng.permutation(len(pool))[: (rows + 1) * SEEDS_PER_ROW]
        groups = [pool[drawn[i :: rows + 1]] for i in range(rows + 1)]
        labels = [range(SEEDS_PER_ROW) if paired else range(100 * i, 100 * i + SEEDS_PER_ROW)
                  for i in range(rows + 1)]  # fmt: skip
        series = [pd.Series(g, index=list(lab)) for g, lab in zip(groups, labels, strict=True)]
        contrasts = verdicts.family(series[0], series[1:])
        alarms += any(c.verdict in ("better", "worse") for c in contrasts)
    return alarms / families


def ab_power(relu, gelu, rows: int, families: int, rng) -> dict:
    """The GELU row against a ReLU baseline on the same seeds, beside rows - 1 A/A rows."""
    found, detectable, needed = 0, [], []
    for _ in range(families):
        drawn = rng.permutation(len(relu))
        chosen = drawn[:SEEDS_PER_ROW]
        base = pd.Series(relu[chosen], index=chosen)
        other = pd.Series(gelu[chosen], index=chosen)
        rest = drawn[SEEDS_PER_ROW:]
        aa = [pd.Series(relu[rest[i::rows]][:SEEDS_PER_ROW], index=chosen) for i in range(rows - 1)]
        c = verdicts.family(base, [other, *aa])[0]
        found += c.verdict == "better"
        detectable.append(c.detectable_diff)
        needed.append(c.seeds_for_1)
    differences = gelu - relu
    effect, spread = differences.mean(), differences.std(ddof=1)
    n, df = SEEDS_PER_ROW, SEEDS_PER_ROW - 1
    critical = stats.t.ppf(1 - verdicts.ALPHA / (2 * rows), df)
    shift = effect / (spread / np.sqrt(n))
    predicted = stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift)
    return {
        "power": found / families,
        "predicted": float(predicted),
        "detectable": float(np.median(detectable)),
        "seeds_for_1": int(np.median(needed)),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs/bench/aa", type=Path)
    p.add_argument("--seeds", type=int, default=40)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--families", type=int, default=1000)
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    acc = accuracies(a.out, a.seeds, a.epochs)
    relu, gelu = acc["relu"], acc["gelu"]
    d = gelu - relu
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    print(
        f"digits, LeNet-5, {a.epochs} epochs, {a.seeds} seeds each: ReLU {relu.mean():.2f}%, "
        f"GELU {gelu.mean():.2f}%; GELU - ReLU {d.mean():+.2f} points "
        f"[{d.mean() - half:+.2f}, {d.mean() + half:+.2f}] (95%, paired over {len(d)} seeds)"
    )
    rng = np.random.default_rng(0)
    worst = 0.0
    print(f"A/A family-wise false-positive rate, {SEEDS_PER_ROW} seeds a row, "
          f"{a.families} families each (must be <= 5%):")  # fmt: skip
    for rows in (3, 7):
        for paired in (True, False):
            rates = [aa_rate(pool, rows, paired, a.families // 2, rng) for pool in (relu, gelu)]
            rate = float(np.mean(rates))
            worst = max(worst, rate)
            how = "paired" if paired else "Welch "
            print(f"  {rows} rows, {how}: {rate:.1%}")
    print(f"A/B: GELU against ReLU, {SEEDS_PER_ROW} paired seeds, {a.families} families each:")
    for rows in (3, 7):
        r = ab_power(relu, gelu, rows, a.families, rng)
        print(
            f"  {rows} rows: better in {r['power']:.0%} (the seed spread predicts "
            f"{r['predicted']:.0%}); findings would say: {SEEDS_PER_ROW} seeds detect about "
            f"{r['detectable']:.1f} points here; about {r['seeds_for_1']} seeds would detect "
            f"1 point (medians)"
        )
    return 0 if worst <= verdicts.ALPHA else 1


if __name__ == "__main__":
    raise SystemExit(main())
