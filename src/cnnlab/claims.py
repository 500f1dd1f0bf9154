"""The ledger of the chapter's claims: `cnnlab claims` reads (or, with --run, first runs)
each claim preset's sweep and writes claims.md with, per claim, the chapter's words, the
experiment, the figures with their intervals, a verdict (holds | does not hold |
inconclusive) and the sweep it came from.

A claim preset is an experiment preset (configs/experiment/claim_NN.yaml): a sweep with a
baseline, as every preset, plus a `claim:` section that states the claim and how it is
judged:
  tests   trained comparisons: runs selected by KEY=VALUE (`arm` against `against`), a
          per-seed `metric` (METRICS) and the `direction` that confirms the claim (higher |
          lower; report: shown, not judged). The statistics are verdicts.py's (paired by
          seed, Bonferroni over the claim's tests), not redone here.
  exact   figures judged by arithmetic on the models the arms build (inspection.py, on
          MNIST's 1x28x28): params, macs, receptive_field, map (the map the head flattens),
          stages (the most conv stages that can be built); relation <, =, > (or report).
  sweep   another preset whose sweep holds these runs (shared arms run once).
  reads   other presets' sweeps that hold some of the runs the tests select (claim 6's
          ReLU arm is claim 1's LeNet-5 run: run once, read by both).
Nothing here imports Hydra or torch until a model is inspected.
"""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cnnlab import files
from cnnlab.config import key_values

VERDICTS = ("holds", "does not hold", "inconclusive")
DIRECTIONS = ("higher", "lower", "report")
RELATIONS = ("<", "=", ">", "report")
INPUT = (1, 28, 28)  # MNIST, the chapter's data: what the exact figures are worked out on


def shift_drop(row: dict) -> float | None:
    """Accuracy lost, in points, from the test set to the test set shifted 2-4 pixels."""
    shifted = row.get("shift_accuracy")
    if not shifted:
        return None
    return 100 * (shifted["0"] - statistics.fmean(shifted[k] for k in ("2", "3", "4")))


def dead_share(row: dict) -> float | None:
    """The share of units never positive (%), averaged over the activation layers."""
    dead = row.get("dead_units")
    return 100 * statistics.fmean(dead.values()) if dead else None


def points(key: str):
    return lambda row: None if row.get(key) is None else 100 * row[key]


# metric -> (what it is, how a per-seed row of metrics.json gives it)
METRICS = {
    "accuracy": ("test accuracy (%)", points("accuracy")),
    "epoch1_accuracy": ("test accuracy after epoch 1 (%)", points("epoch1_accuracy")),
    "generalization_gap": ("train - test accuracy (points)", points("generalization_gap")),
    "shift_drop": ("accuracy lost at 2-4 pixel shifts (points)", shift_drop),
    "dead_share": ("units never positive (%, mean over layers)", dead_share),
    # a ratio spanning orders of magnitude (ReLU ~0.3, sigmoid ~1e-7): compared as its log,
    # where a seed's spread does not swamp a millionfold difference
    "grad_ratio": (
        "log10 of the first / last layer gradient norm, first 50 steps",
        lambda r: math.log10(r["grad_ratio"]) if r.get("grad_ratio") else None,
    ),
}


# metric -> the measurement after training it reads (config `measures`, measures.py): a
# claim preset takes these, and only these, for the claims that read its sweep
MEASURED_FOR = {
    "shift_drop": "shift_accuracy",
    "dead_share": "dead_units",
    "generalization_gap": "train_accuracy",
}


class ClaimError(ValueError):
    """A bad claim preset or argument: one `error:` line, exit 2."""


@dataclass
class Claim:
    number: int
    words: str
    experiment: str
    preset: str  # the experiment preset's name
    sweep: str  # the preset whose sweep holds the runs
    tests: list[dict] = field(default_factory=list)
    exact: list[dict] = field(default_factory=list)
    note: str | None = None  # what a reader needs to read the verdict right
    reads: list[str] = field(default_factory=list)  # other presets' sweeps it also reads

    @property
    def sweeps(self) -> list[str]:
        """The presets whose sweeps hold this claim's runs."""
        return [self.sweep, *self.reads]


def load_claims(experiment_dir: Path) -> list[Claim]:
    """Every claim preset under configs/experiment, in claim order."""
    claims = []
    for path in sorted(Path(experiment_dir).glob("claim_*.yaml")):
        spec = (yaml.safe_load(path.read_text()) or {}).get("claim") or {}
        name = path.stem
        for part, allowed, key in (
            ("tests", DIRECTIONS, "direction"),
            ("exact", RELATIONS, "relation"),
        ):
            for item in spec.get(part) or []:
                if item.get(key) not in allowed:
                    raise ClaimError(f"{path}: {part} {item}: {key} must be one of {allowed}")
                if part == "tests" and item.get("metric") not in METRICS:
                    raise ClaimError(
                        f"{path}: metric {item.get('metric')!r}: one of {list(METRICS)}"
                    )
        claims.append(
            Claim(
                int(spec["number"]),
                spec["words"],
                spec["experiment"],
                name,
                spec.get("sweep") or name,
                list(spec.get("tests") or []),
                list(spec.get("exact") or []),
                spec.get("note"),
                list(spec.get("reads") or []),
            )
        )
    return sorted(claims, key=lambda c: c.number)


# ---- exact claims: arithmetic on the models ------------------------------------------------


def model_config(selector: str):
    """The model config that `model=NAME,model.KEY=VALUE` names (LeNet-5 by default)."""
    from cnnlab.config import LeNetConfig, MLPConfig

    values = key_values("arm", selector) if selector else {}
    schema = MLPConfig if values.pop("model", "lenet5") == "mlp" else LeNetConfig
    return schema(**{k.removeprefix("model."): v for k, v in values.items()})


def figure(selector: str, name: str):
    """One exact figure of the model `selector` builds on INPUT."""
    from dataclasses import replace

    from cnnlab.inspection import inspect_model
    from cnnlab.models import build_model, plan
    from cnnlab.outcome import ConfigError

    cfg = model_config(selector)
    if name == "stages":  # the most conv stages this setting can stack on INPUT
        for stages in range(1, 33):
            try:
                plan(replace(cfg, channels=[cfg.channels[0]] * stages), INPUT, 10)
            except ConfigError:
                return stages - 1
        return 32
    import torch

    with torch.device("meta"):
        info = inspect_model(build_model(cfg, INPUT, 10), INPUT)
    if name == "map":
        layers = info["layers"]
        flat = next(i for i, layer in enumerate(layers) if layer["type"] == "Flatten")
        shape = layers[flat - 1]["output_shape"] if flat else list(INPUT)
        return shape[1:]  # the spatial size: channels are not what resolution means
    return info[name]


def relation_holds(a, b, relation: str) -> bool:
    a, b = (list(v) if isinstance(v, list | tuple) else [v] for v in (a, b))
    if relation == "=":
        return a == b
    pairs = list(zip(a, b, strict=False))
    return all(x < y for x, y in pairs) if relation == "<" else all(x > y for x, y in pairs)


def judge_exact(item: dict) -> dict:
    a, b = figure(item["arm"], item["figure"]), figure(item["against"], item["figure"])
    relation = item["relation"]
    verdict = "report" if relation == "report" else VERDICTS[not relation_holds(a, b, relation)]
    return {**item, "arm_value": a, "against_value": b, "verdict": verdict}


# ---- trained claims: verdicts.py on per-seed figures ---------------------------------------


def selected(runs: list[dict], selector: str) -> list[dict]:
    """The completed runs `selector` (KEY=VALUE[,...], a key or a group's choice) names."""
    from cnnlab.findings import settings
    from cnnlab.records import canon

    def chosen(run: dict) -> dict:
        # a group a preset's defaults chose (claim 6's `override /model: lenet5`) is on no
        # command line: its `name` key says what was chosen
        named = {k: run["config"][f"{k}.name"] for k in wanted if f"{k}.name" in run["config"]}
        return {**named, **settings(run)}

    wanted = key_values("arm", selector)
    return [
        run
        for run in runs
        if run["status"] == "completed"
        and all(canon(chosen(run).get(k)) == canon(v) for k, v in wanted.items())
    ]


def per_seed(runs: list[dict], selector: str, metric: str):
    """The metric of each seed of the runs `selector` names, indexed by seed. Two runs with
    one seed (a selector that names too little, now that sweeps share runs) are refused:
    keeping either would be a guess."""
    import pandas as pd

    values, source = {}, {}
    for run in selected(runs, selector):
        metrics = run["metrics"]
        for row in metrics.get("per_seed") or [metrics]:
            if row.get("status", "completed") != "completed":
                continue
            value, seed = METRICS[metric][1](row), row.get("seed", metrics.get("seed"))
            if value is None:
                continue
            if seed in source and source[seed] != run["path"]:
                raise ClaimError(
                    f"{selector!r} names more than one run with seed {seed} "
                    f"({source[seed]}, {run['path']}): name the key that tells them apart"
                )
            values[seed], source[seed] = value, run["path"]
    return pd.Series(values, dtype=float)


# what a test may compare across: the keys that say what a run trains
TRAINING_KEYS = ("model.", "data.", "trainer.")


def check_alike(runs: list[dict], item: dict) -> None:
    """Refuse a test whose arm and baseline runs differ in a training key neither selector
    names (a run read from another claim's sweep trained for longer, on other images...):
    its difference would be credited to the knob the test names."""
    from cnnlab.config import is_run_setting
    from cnnlab.records import canon

    named = {k for side in ("arm", "against") for k in key_values("arm", item[side])}
    sides = [selected(runs, item[side]) for side in ("arm", "against")]
    for a in sides[0]:
        for b in sides[1]:
            for key in sorted(set(a["config"]) | set(b["config"])):
                group = key.partition(".")[0]
                if (
                    not key.startswith(TRAINING_KEYS)
                    or is_run_setting(key)
                    or key in named
                    or canon(a["config"].get(key)) == canon(b["config"].get(key))
                    # model=mlp against model=lenet5: every key of the two models differs
                    or (
                        group in named
                        and a["config"].get(f"{group}.name") != b["config"].get(f"{group}.name")
                    )
                ):
                    continue
                raise ClaimError(
                    f"{item['arm']!r} against {item['against']!r}: the runs also differ in "
                    f"{key} ({a['config'].get(key)!r} in {a['path']}, "
                    f"{b['config'].get(key)!r} in {b['path']}): a test compares runs that "
                    "differ only in the keys it names"
                )


def judge_tests(runs: list[dict], tests: list[dict]) -> list[dict]:
    """Each test's arm against its baseline, Bonferroni-corrected over the claim's judged
    tests (verdicts.family), so a verdict reads better or worse iff its interval excludes 0."""
    from cnnlab import verdicts

    judged = []
    for item in tests:
        arm, against = (per_seed(runs, item[k], item["metric"]) for k in ("arm", "against"))
        check_alike(runs, item)
        judged.append({**item, "arm_values": arm, "against_values": against})
    m = sum(
        len(item["arm_values"]) > 0 and len(item["against_values"]) > 0
        for item in judged
        if item["direction"] != "report"
    )
    for item in judged:
        arm, against = item["arm_values"], item["against_values"]
        ok = len(arm) and len(against)
        item["contrast"] = verdicts.family(against, [arm], m=max(1, m))[0] if ok else None
        item["verdict"] = test_verdict(item)
    return judged


def test_verdict(item: dict) -> str:
    c = item["contrast"]
    if item["direction"] == "report":
        return "report"
    if c is None:
        return "not run"
    if c.verdict in ("better", "worse"):
        confirms = (c.diff > 0) == (item["direction"] == "higher")
        return "holds" if confirms else "does not hold"
    if c.verdict == "identical":  # exactly no difference: the claimed one is not there
        return "does not hold"
    if c.verdict == "n too small":
        return "inconclusive (n too small: at least 3 seeds a side)"
    return f"inconclusive ({c.n} seeds detect about {c.detectable_diff:.3g} here{more(c)})"


def more(c) -> str:
    """The seeds that would detect the difference seen: the detectable difference shrinks as
    one over the square root of the seeds."""
    if not c.detectable_diff or not c.diff:
        return ""
    needed = math.ceil(c.n * (c.detectable_diff / abs(c.diff)) ** 2)
    return f"; about {needed} seeds would detect the {c.diff:+.3g} seen"


def claim_verdict(judged: list[dict]) -> str:
    words = [item["verdict"] for item in judged if item["verdict"] != "report"]
    if not words or "not run" in words:
        return "inconclusive (not run)" if words else "inconclusive (nothing judged)"
    if "does not hold" in words:
        return "does not hold"
    if all(word == "holds" for word in words):
        return "holds"
    return next(word for word in words if word.startswith("inconclusive"))


# ---- claims.md -------------------------------------------------------------------------------


def correction(judged: list[dict]) -> str:
    """How the differences' intervals were made: verdicts.family's level and adjustment."""
    c = next(
        (item["contrast"] for item in judged if item["contrast"] and item["contrast"].ci_level),
        None,
    )
    if c is None:
        return ""
    return f"; each difference's interval at {100 * c.ci_level:.3g}%, {c.ci_adjustment}"


BOUNDED = (
    "accuracy",
    "epoch1_accuracy",
    "dead_share",
)  # shares in [0, 100]; the rest can go below 0


def interval_text(values, metric: str = "accuracy") -> str:
    from cnnlab.verdicts import interval_of_mean

    if not len(values):
        return "-"
    interval = interval_of_mean(values, (0, 100) if metric in BOUNDED else None)
    low_high = f" [{interval[0]:.3g}, {interval[1]:.3g}]" if interval else ""
    return f"{values.mean():.4g}{low_high} (n={len(values)})"


def test_rows(judged: list[dict]) -> list[str]:
    lines = [
        "| metric | arm | against | arm: mean [95% CI] | against | diff [interval] | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for item in judged:
        c = item["contrast"]
        diff = "-"
        if c is not None:
            diff = f"{c.diff:+.3g}"
            if c.ci95_low is not None:
                diff += f" [{c.ci95_low:+.3g}, {c.ci95_high:+.3g}]"
        lines.append(
            f"| {METRICS[item['metric']][0]}, {item['direction']} | `{item['arm']}` | "
            f"`{item['against']}` | {interval_text(item['arm_values'], item['metric'])} | "
            f"{interval_text(item['against_values'], item['metric'])} | {diff} | "
            f"{item['verdict']} |"
        )
    return lines


def exact_rows(judged: list[dict]) -> list[str]:
    lines = [
        "| figure | arm | value | relation | against | value | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for item in judged:
        lines.append(
            f"| {item['figure']} | `{item['arm'] or 'model=lenet5'}` | {item['arm_value']} | "
            f"{item['relation']} | `{item['against'] or 'model=lenet5'}` | "
            f"{item['against_value']} | {item['verdict']} |"
        )
    return lines


def sweep_about(runs: list[dict]) -> str:
    done = [run["metrics"] for run in runs if run["status"] == "completed"]
    if not done:
        return "no completed runs"
    data = sorted({str(m.get("data")) for m in done})
    epochs = sorted({m.get("epochs_completed") for m in done})
    seconds = sum(m.get("train_seconds") or 0 for m in done)
    measuring = sum(m.get("measure_seconds") or 0 for m in done)  # the ledger's cost too
    return (
        f"{len(runs)} run{'s' * (len(runs) != 1)} on {', '.join(data)}, "
        f"{'/'.join(map(str, epochs))} epoch{'s' * (epochs != [1])}, "
        f"{seconds:.0f} s of training and {measuring:.0f} s of measurements"
    )


def section(claim: Claim, sweeps: dict[Path, list[dict]]) -> tuple[str, str]:
    """claims.md's section of `claim` and its verdict; `sweeps`: each folder of
    claim.sweeps and the runs it holds (an empty list: not run)."""
    runs = [run for held in sweeps.values() for run in held]
    exact = [judge_exact(item) for item in claim.exact]
    tests = judge_tests(runs, claim.tests) if claim.tests else []
    verdict = claim_verdict(exact + tests)
    where = "; ".join(
        f"`{folder}` ({sweep_about(held)})" if held else f"not run (`{folder}` is empty)"
        for folder, held in sweeps.items()
    )
    lines = [
        f"## {claim.number}. {claim.words}",
        "",
        f"- Experiment: {claim.experiment} (`cnnlab train experiment={claim.preset}`)",
        f"- Sweep{'s' * (len(sweeps) > 1)}: {where}"
        if claim.tests
        else "- Sweep: none needed (arithmetic)",
        f"- **Verdict: {verdict}**",
        *([f"- Note: {claim.note}"] if claim.note else []),
        "",
    ]
    if exact:
        lines += ["By arithmetic (`cnnlab inspect`, 1x28x28 input):", "", *exact_rows(exact), ""]
    if tests:
        lines += [f"Trained (per seed, paired by seed{correction(tests)}):", ""]
        lines += [*test_rows(tests), ""]
    return "\n".join(lines), verdict


def ledger(claims: list[Claim], root: Path) -> str:
    from cnnlab.records import load_runs

    sections = []
    summary = ["| # | claim | verdict | sweep |", "|---|---|---|---|"]
    for claim in claims:
        folders = [root / preset for preset in claim.sweeps]
        sweeps = {folder: load_runs([folder]) if folder.is_dir() else [] for folder in folders}
        text, verdict = section(claim, sweeps)
        sections.append(text)
        names = ", ".join(f"`{preset}`" for preset in claim.sweeps)
        summary.append(f"| {claim.number} | {claim.words} | {verdict} | {names} |")
    head = [
        "# The chapter's claims, put to the test",
        "",
        "Written by `cnnlab claims`: each claim's verdict is holds, does not hold or "
        "inconclusive (with the seeds that would detect the difference seen). Exact claims "
        "are judged by arithmetic on the models; trained ones by verdicts.py on each seed's "
        "figures in metrics.json.",
        "",
    ]
    return "\n".join([*head, *summary, "", *sections])


def run_sweep(preset: str, root: Path, overrides: list[str]) -> int:
    """`cnnlab train experiment=PRESET` into root/PRESET, in its own process."""
    command = [sys.executable, "-m", "cnnlab", "train", f"experiment={preset}"]
    command += [f"hydra.sweep.dir={root / preset}", *overrides]
    print("running:", " ".join(command[2:]), flush=True)
    started = time.perf_counter()
    code = subprocess.run(command).returncode
    print(f"{preset}: exit {code} after {time.perf_counter() - started:.0f} s", flush=True)
    return code


def main(
    experiment_dir: Path,
    root: str | Path,
    overrides: list[str],
    run: bool = False,
    only: set[int] | None = None,
) -> int:
    """`cnnlab claims` on the values cli.py parsed: the claims numbered in `only` (all
    when None), their sweeps first run with `overrides` where root lacks them if `run`,
    then root/claims.md written."""
    try:
        claims = load_claims(experiment_dir)
    except ValueError as e:  # a ClaimError, or a claim number that is not one
        print(f"error: {e}", file=sys.stderr)
        return 2
    if only:
        claims = [c for c in claims if c.number in only]
    root = Path(root)
    if run:
        for preset in dict.fromkeys(p for c in claims if c.tests for p in c.sweeps):
            if not (root / preset).is_dir():
                code = run_sweep(preset, root, overrides)
                if code == 2:
                    return code
    try:
        text = ledger(claims, root)
    except ClaimError as e:  # a preset whose tests name too little: nothing is written
        print(f"error: {e}", file=sys.stderr)
        return 2
    root.mkdir(parents=True, exist_ok=True)
    out = root / "claims.md"
    files.write_atomic(out, text + "\n")
    print(f"claims.md: {out}")
    return 0
