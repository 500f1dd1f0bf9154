"""The README's table "What each preset showed", made from the presets' own findings.md:

    python docs/presets_table.py outputs/sweeps/DAY/TIME ...   # one sweep folder per preset

Each row: the preset (the sweep's experiment=), its baseline's test accuracy, and every other
row's difference against it with its simultaneous interval (its level) and the verdict, as
findings.md says them.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

BASE = re.compile(r"^- (.+) \(the baseline\): (.+)$")
ROW = re.compile(
    r"^- (.+?) vs .+?: ([+-][\d.]+) points (\[[^\]]+\]) \(([\d.]+%) interval\), ([a-z ]+?) with "
)


def experiment(sweep: Path) -> str:
    overrides = next(sweep.glob("*/.hydra/overrides.yaml"))
    chosen = [o for o in yaml.safe_load(overrides.read_text()) if o.startswith("experiment=")]
    return chosen[0].removeprefix("experiment=") if chosen else sweep.name


def row(sweep: Path) -> str:
    lines = (sweep / "findings.md").read_text().splitlines()
    base = next(BASE.match(line) for line in lines if BASE.match(line))
    others = [ROW.match(line) for line in lines if ROW.match(line)]
    said = "; ".join(f"{m[1]} {m[2]} {m[3]} ({m[4]}) **{m[5]}**" for m in others)
    return f"| `{experiment(sweep)}` | {base[1]}: {base[2]} | {said} |"


if __name__ == "__main__":
    print(
        "| experiment | baseline: test accuracy, 95% CI | against it: points, simultaneous "
        "interval (level), verdict |"
    )
    print("|---|---|---|")
    for folder in sys.argv[1:]:
        print(row(Path(folder)))
