"""Issue 21: is the difference real? compare --baseline: diff, ci95, p (Holm), paired,
verdict; findings.md in each sweep folder; presets declare their baseline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import QUICK, cnnlab_train
from scipy import stats

from cnnlab import compare, plots, records, verdicts

pytestmark = pytest.mark.usefixtures("one_thread")

PRESETS = Path(__file__).resolve().parents[1] / "configs" / "experiment"
DIGITS = ["data=digits", "data.train_size=400", "trainer.epochs=1", "pictures=false"]


def by_seed(metrics: dict) -> dict[int, float]:
    return {row["seed"]: 100 * row["accuracy"] for row in metrics["per_seed"]}


def job(sweep: Path, part: str) -> dict:
    (folder,) = [f for f in sweep.iterdir() if f.is_dir() and part in f.name]
    return json.loads((folder / "metrics.json").read_text())


# ---- the statistics, on hand-made seeds ------------------------------------------------------


def test_paired_interval_is_the_t_interval_of_the_differences():
    base = pd.Series([90.0, 91.0, 89.5, 90.5], index=[0, 1, 2, 3])
    other = pd.Series([91.0, 91.5, 91.0, 90.0], index=[3, 0, 1, 2])  # another order: by seed
    (c,) = verdicts.holm([verdicts.contrast(base, other)])
    d = [91.5 - 90.0, 91.0 - 91.0, 90.0 - 89.5, 91.0 - 90.5]
    mean, se = sum(d) / 4, stats.tstd(d) / 2
    half = stats.t.ppf(0.975, 3) * se
    assert c.paired and c.n == 4
    assert (c.diff, c.ci95_low, c.ci95_high) == pytest.approx((mean, mean - half, mean + half))
    assert c.p_value == pytest.approx(2 * stats.t.sf(mean / se, 3))
    assert c.verdict == ("better" if c.p_value < 0.05 else "no detectable difference")


def test_other_seeds_are_compared_by_welch_and_too_few_get_no_verdict():
    base = pd.Series([80.0, 81.0, 82.0], index=[0, 1, 2])
    other = pd.Series([85.0, 86.5, 85.5, 86.0], index=[10, 11, 12, 13])
    c = verdicts.contrast(base, other)
    welch = stats.ttest_ind(other, base, equal_var=False)
    assert not c.paired and c.p_value == pytest.approx(welch.pvalue)
    assert c.ci95_low == pytest.approx(welch.confidence_interval(0.95).low)
    short = verdicts.contrast(base, pd.Series([90.0, 91.0], index=[0, 1]))
    assert short.verdict == "n too small" and short.p_value is None and short.ci95_low is None


def test_holm_multiplies_the_smallest_p_by_m_and_keeps_the_order():
    contrasts = [
        verdicts.Contrast(d, 0, 0, p, True, "", 5, 1.0)
        for d, p in ((1.0, 0.02), (-2.0, 0.01), (0.5, 0.04), (0.1, 0.5))
    ]
    verdicts.holm(contrasts)
    assert [c.p_value for c in contrasts] == pytest.approx([0.06, 0.04, 0.08, 0.5])
    assert [c.verdict for c in contrasts] == [
        "no detectable difference", "worse", "no detectable difference",
        "no detectable difference",
    ]  # fmt: skip


def test_identical_seeds_are_no_detectable_difference_without_nan():
    same = pd.Series([88.0, 89.0, 90.0], index=[0, 1, 2])
    (c,) = verdicts.holm([verdicts.contrast(same, same.copy())])
    assert (c.diff, c.ci95_low, c.ci95_high, c.detectable) == (0, 0, 0, 0)
    assert c.verdict == "no detectable difference" and not math.isnan(c.p_value)


# ---- end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def activations(tmp_path_factory):
    sweep = tmp_path_factory.mktemp("activations") / "sweep"
    code = cnnlab_train(sweep, "experiment=activations", *DIGITS, "seeds=8", multirun=True)
    assert code == 0
    return sweep


def test_gelu_against_relu_by_hand(activations, capsys):
    capsys.readouterr()
    assert compare.compare_command(
        [activations], fmt="json", baseline="model.activation=relu"
    ) == 0  # fmt: skip
    rows = {row["model.activation"]: row for row in json.loads(capsys.readouterr().out)}
    relu, gelu = by_seed(job(activations, "=relu")), by_seed(job(activations, "=gelu"))
    d = [gelu[s] - relu[s] for s in range(8)]
    mean, se = sum(d) / 8, stats.tstd(d) / math.sqrt(8)
    row = rows["gelu"]
    assert row["paired"] is True and row["diff"] == pytest.approx(mean, abs=1e-9)
    assert row["ci95_low"] == pytest.approx(mean - stats.t.ppf(0.975, 7) * se, abs=1e-6)
    assert row["ci95_high"] == pytest.approx(mean + stats.t.ppf(0.975, 7) * se, abs=1e-6)
    # Holm over the two rows compared with ReLU
    raw = {
        name: stats.ttest_rel(list(by_seed(job(activations, f"={name}")).values()),
                              list(relu.values())).pvalue
        for name in ("gelu", "leaky_relu")
    }  # fmt: skip
    m, first = 2, min(raw.values())
    holm = {
        name: min(1, m * p) if p == first else max(min(1, m * first), p) for name, p in raw.items()
    }
    for name in raw:
        assert rows[name]["p_value"] == pytest.approx(holm[name])
        expected = "no detectable difference"
        if holm[name] < 0.05:
            expected = "better" if rows[name]["diff"] > 0 else "worse"
        assert rows[name]["verdict"] == expected
    assert rows["relu"]["verdict"] == "baseline" and rows["relu"]["diff"] is None


def test_the_sweep_writes_findings_naming_its_baseline(activations):
    text = (activations / "findings.md").read_text()
    assert "against the baseline model.activation=relu" in text
    base, *lines = [line for line in text.splitlines() if line.startswith("- ")]
    assert base.startswith("- model.activation=relu (the baseline): ")
    assert len(lines) == 2 and all(" vs model.activation=relu: " in line for line in lines)
    assert all("would be detectable" in line or "identical" in line for line in lines)
    table = pd.read_csv(activations / "comparison.csv")
    assert set(verdicts.COLUMNS) <= set(table.columns)


def test_a_knob_that_changes_nothing_has_no_detectable_difference(tmp_path, capsys):
    sweep = tmp_path / "slope"
    overrides = [*DIGITS, "seeds=3", "model.negative_slope=0.05,0.2"]  # ReLU ignores the slope
    assert cnnlab_train(sweep, *overrides, multirun=True) == 0
    capsys.readouterr()  # the sweep's own summary
    assert compare.compare_command([sweep], fmt="json", baseline="model.negative_slope=0.05") == 0
    (row,) = [r for r in json.loads(capsys.readouterr().out) if r["verdict"] != "baseline"]
    assert (row["diff"], row["ci95_low"], row["ci95_high"]) == (0, 0, 0)
    assert row["verdict"] == "no detectable difference" and row["p_value"] == 1


@pytest.mark.parametrize(
    "baseline, says",
    [
        ("model.activation=swish", "no row of the comparison matches"),
        ("model.activation", "give KEY=VALUE pairs"),
        ("model.name=lenet5", "3 rows of the comparison match"),
    ],
)
def test_a_baseline_that_names_no_single_row_is_one_line(activations, capsys, baseline, says):
    assert compare.compare_command([activations], baseline=baseline) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --baseline") and says in err[0]


def test_every_preset_declares_a_baseline_that_its_sweep_holds():
    for preset in PRESETS.glob("*.yaml"):
        config = yaml.safe_load(preset.read_text())
        if preset.stem == "timeseries":  # rows on different data: none on purpose
            assert config["baseline"] is None
            continue
        pairs = dict(item.split("=") for item in config["baseline"].split(","))
        params = config["hydra"]["sweeper"]["params"]
        for key, value in pairs.items():
            assert value in str(params[key]).split(","), preset.name


def test_a_bad_baseline_in_the_config_is_refused_before_training(tmp_path, run_cli):
    r = run_cli(tmp_path, "train", *QUICK, "baseline=relu", f"hydra.run.dir={tmp_path / 'r'}")
    assert r.returncode == 2 and "baseline=relu is not allowed" in r.stderr
    assert not (tmp_path / "r").exists()


# ---- the plots read as answers ---------------------------------------------------------------


def drawn_grids(monkeypatch) -> list:
    grids = []
    monkeypatch.setattr(plots, "save", lambda grid, file: grids.append(grid))
    return grids


def legend_texts(grid) -> list[str]:
    return [t.get_text() for t in grid.legend.get_texts()]


def test_accuracy_plot_is_titled_bars_are_t_intervals_and_the_baseline_is_marked(
    activations, tmp_path, monkeypatch
):
    grids = drawn_grids(monkeypatch)
    compare.write_summary(records.find_runs([activations]), tmp_path / "out")
    accuracy, losses = grids
    title = accuracy.figure._suptitle.get_text()
    assert "digits, 1 epoch" in title and "bars: 95% CI over 8 seeds" in title
    assert "over 8 seeds" in losses.figure._suptitle.get_text()
    assert accuracy.legend.get_title().get_text() == "config"
    # the preset's declared baseline (model.activation=relu) first, named so in the legend
    names = [f"lenet5 activation={name}" for name in ("relu", "leaky_relu", "gelu")]
    shown = [text.replace("\n", " ") for text in legend_texts(accuracy)]  # wrapped at 30
    assert shown == [names[0] + " (baseline)", *names[1:]]
    axes = accuracy.axes.flat[0]
    relu = pd.Series(by_seed(job(activations, "=relu")))
    (line,) = [ln for ln in axes.get_lines() if ln.get_linestyle() == "--"]
    assert line.get_ydata()[0] == pytest.approx(relu.mean())
    assert line.get_color() == "black" and not axes.texts  # no label over the points
    low, high = verdicts.interval_of_mean(relu)
    bars = [c for c in axes.collections if len(c.get_segments()) == 1]
    spans = [tuple(sorted(c.get_segments()[0][:, 1])) for c in bars]
    assert any(span == pytest.approx((low, high)) for span in spans)


def test_a_variant_sweep_is_labelled_by_variant_names(tmp_path, monkeypatch):
    sweep = tmp_path / "variants"
    overrides = [*DIGITS, "data.train_size=200", "variant=baseline,kernel3,factorize"]
    assert cnnlab_train(sweep, *overrides, multirun=True) == 0
    grids = drawn_grids(monkeypatch)
    compare.write_summary(records.find_runs([sweep]), tmp_path / "out", baseline="variant=baseline")
    for grid in grids:
        assert grid.legend.get_title().get_text() == "config"
        assert legend_texts(grid) == [
            "lenet5 baseline (baseline)",
            "lenet5 kernel3",
            "lenet5 factorize",
        ]
    text = (tmp_path / "out" / "findings.md").read_text()
    assert "- variant=kernel3 vs variant=baseline: " in text


def test_rows_that_did_not_complete_are_neither_baseline_nor_compared(tmp_path, capsys):
    from test_compare import make_run

    for job, width in enumerate((1.0, 2.0, 3.0)):
        accuracies = [0.80 + width / 100 + s / 1000 for s in range(3)]
        make_run(tmp_path / f"{job}_w{width}", width=width, seeds=accuracies)
    # a failed run of the baseline's config: a row of its own, never matched
    make_run(tmp_path / "3_w1_failed", width=1.0, status="failed", error="boom")
    assert compare.compare_command([tmp_path], fmt="json", baseline="model.width=1") == 0
    rows = {row["run"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["0_w1.0"]["verdict"] == "baseline"
    assert rows["3_w1_failed"]["verdict"] is None and rows["3_w1_failed"]["diff"] is None
    # every seed 1 point above the baseline's, paired: an exact difference, no spread
    assert rows["1_w2.0"]["diff"] == pytest.approx(1.0) and rows["1_w2.0"]["verdict"] == "better"
