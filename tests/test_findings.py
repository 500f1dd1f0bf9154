"""Issue 27: verdicts a reader can act on, on hand-made run folders (no training): one
(configuration, seed) counted once, like compared with like, diverged seeds stated, the
--baseline value checked, and --metric. Issue 32: a declared baseline that does not fit
is a note; the quoting hint on a baseline parse error."""

import json

import pytest
import yaml
from conftest import make_run

from cnnlab import compare, records

ACCURACIES = [0.90, 0.93, 0.91, 0.94, 0.92]
BETTER = [a + d for a, d in zip(ACCURACIES, [0.03, 0.02, 0.035, 0.025, 0.03], strict=True)]


def edit(folder, config=None, metrics=None):
    """Change a made run's config (dotted keys) or metrics.json (a function of it)."""
    file = folder / ".hydra" / "config.yaml"
    tree = yaml.safe_load(file.read_text())
    for key, value in (config or {}).items():
        *parents, last = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    file.write_text(yaml.safe_dump(tree))
    if metrics:
        data = json.loads((folder / "metrics.json").read_text())
        metrics(data)
        (folder / "metrics.json").write_text(json.dumps(data))
    return folder


def json_rows(capsys, *paths, key="model.width", **options) -> dict:
    code = compare.compare_command(list(paths), fmt="json", **options)
    out = capsys.readouterr()
    assert code == 0, out.err
    return {row[key] if key else row["run"]: row for row in json.loads(out.out)}


def refused(capsys, *paths, **options) -> str:
    assert compare.compare_command(list(paths), **options) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    return err[0]


# ---- one (configuration, seed) counts once ---------------------------------------------------


def test_a_rerun_of_the_same_seeds_counts_once(tmp_path, capsys):
    make_run(tmp_path / "sweep" / "0_w1", width=1.0, seeds=ACCURACIES)
    make_run(tmp_path / "sweep" / "1_w2", width=2.0, seeds=BETTER)
    make_run(tmp_path / "rerun", width=1.0, seeds=ACCURACIES)  # seeds 0-4 again
    alone = json_rows(capsys, tmp_path / "sweep", baseline="model.width=1")
    both = json_rows(capsys, tmp_path / "sweep", tmp_path / "rerun", baseline="model.width=1")
    for width in (1.0, 2.0):
        for key in ("n", "p_value", "verdict", "paired", "ci95_low", "ci95_high"):
            assert both[width][key] == alone[width][key]
    assert both[1.0]["n"] == 5 and both[2.0]["paired"] is True
    assert both[1.0]["repeats"] == 5 and both[2.0]["repeats"] == 0
    # the default text table (no run column) says so beside n
    assert compare.compare_command([str(tmp_path / "sweep"), str(tmp_path / "rerun")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any("width=1" in line and " 5 (+5 repeats) " in line for line in lines), lines


def test_repeats_trained_alike_that_disagree_are_refused_naming_both_folders(tmp_path, capsys):
    make_run(tmp_path / "a", width=1.0, seeds=ACCURACIES)
    make_run(tmp_path / "b", width=1.0, seeds=[0.90, 0.93, 0.5, 0.94, 0.92])  # seed 2 differs
    said = refused(capsys, tmp_path)
    assert "seed 2" in said and " a and b" in said


def test_a_seed_trained_alone_and_in_a_stack_counts_once_as_their_mean(tmp_path, capsys):
    make_run(tmp_path / "0_stack", width=1.0, seeds=ACCURACIES)
    make_run(tmp_path / "1_alone", width=1.0, seed=2, accuracy=0.9125)  # a test image apart
    (row,) = json_rows(capsys, tmp_path, key=None).values()
    assert row["n"] == 5 and row["repeats"] == 1
    seeds = [0.90, 0.93, (0.91 + 0.9125) / 2, 0.94, 0.92]
    assert row["accuracy_%"] == pytest.approx(100 * sum(seeds) / 5)


# ---- like with like ----------------------------------------------------------------------------


def test_rows_on_different_data_sets_get_no_verdict_across_them(tmp_path, capsys):
    make_run(tmp_path / "digits", width=1.0, seeds=ACCURACIES)
    edit(make_run(tmp_path / "other", width=2.0, seeds=BETTER), {"data.name": "digits2"})
    rows = json_rows(capsys, tmp_path, baseline="model.width=1")
    assert rows[1.0]["verdict"] == "baseline"
    assert rows[2.0]["verdict"] is None and rows[2.0]["diff"] is None
    said = refused(capsys, tmp_path, baseline="data.name=synthetic")
    assert said.startswith("error: --baseline data.name=synthetic: data.name picks the test set")


def test_a_sweep_over_data_sets_gets_a_verdict_per_data_set(tmp_path, capsys):
    for job, (data, width, seeds) in enumerate(
        [("ECG200", 1.0, ACCURACIES), ("ECG200", 2.0, BETTER), ("FordA", 1.0, BETTER),
         ("FordA", 2.0, ACCURACIES)]
    ):  # fmt: skip
        edit(make_run(tmp_path / f"{job}_j", width=width, seeds=seeds), {"data.name": data})
    rows = list(json_rows(capsys, tmp_path, key="run", baseline="model.width=1").values())
    assert [row["within"] for row in rows] == ["ECG200"] * 2 + ["FordA"] * 2
    assert [row["verdict"] for row in rows] == ["baseline", "better", "baseline", "worse"]
    assert rows[1]["ci_level"] == 0.95  # one row compared on each data set
    compare.write_summary(records.find_runs([tmp_path]), tmp_path / "out", baseline="model.width=1")
    text = (tmp_path / "out" / "findings.md").read_text()
    assert "## ECG200" in text and "## FordA" in text
    lines = [line for line in text.splitlines() if line.startswith("- ")]
    assert len(lines) == 4
    for line in lines:
        assert " on ECG200" in line or " on FordA" in line


# ---- intervals and words ----------------------------------------------------------------------


def test_json_says_the_level_and_the_table_labels_the_interval(tmp_path, capsys):
    make_run(tmp_path / "0_w1", width=1.0, seeds=ACCURACIES)
    make_run(tmp_path / "1_w2", width=2.0, seeds=BETTER)
    make_run(tmp_path / "2_w3", width=3.0, seeds=[a + 0.002 for a in ACCURACIES[::-1]])
    rows = json_rows(capsys, tmp_path, baseline="model.width=1")
    for row in (rows[2.0], rows[3.0]):
        assert row["ci_level"] == pytest.approx(0.975)
        assert row["ci_adjustment"] == "Bonferroni over 2 rows"
        excludes = row["ci95_low"] > 0 or row["ci95_high"] < 0
        assert (row["verdict"] in ("better", "worse")) == excludes
        assert 0 <= row["prob_improvement"] <= 1 and row["metric"] == "accuracy"
    assert rows[2.0]["verdict"] == "better" and rows[3.0]["verdict"] == "inconclusive"
    assert compare.compare_command([tmp_path], baseline="model.width=1") == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "sim. 95% CI" in header and "ci95 " not in header


def test_diverged_seeds_are_counted_and_too_few_say_why(tmp_path, capsys):
    def diverge(*seeds):
        def change(metrics):
            for copy in metrics["per_seed"]:
                if copy["seed"] in seeds:
                    copy.update(status="diverged", accuracy=None, f1_macro=None)

        return change

    make_run(tmp_path / "0_w1", width=1.0, seeds=ACCURACIES)
    edit(make_run(tmp_path / "1_w2", width=2.0, seeds=BETTER), metrics=diverge(1, 3))
    edit(make_run(tmp_path / "2_w3", width=3.0, seeds=BETTER), metrics=diverge(0, 1, 2))
    every = make_run(tmp_path / "3_w4", width=4.0, seeds=BETTER, status="diverged")
    edit(every, metrics=diverge(0, 1, 2, 3, 4))
    rows = json_rows(capsys, tmp_path, baseline="model.width=1")
    assert (rows[2.0]["n"], rows[2.0]["diverged"]) == (3, 2)
    assert rows[3.0]["verdict"] == "n too small"
    compare.write_summary(records.find_runs([tmp_path]), tmp_path / "out", baseline="model.width=1")
    text = (tmp_path / "out" / "findings.md").read_text()
    (two,) = [line for line in text.splitlines() if line.startswith("- model.width=2")]
    assert "2 of 5 seeds diverged: judged on 3." in two
    (three,) = [line for line in text.splitlines() if line.startswith("- model.width=3")]
    assert "n too small for a verdict with 2 and 5 seeds" in three
    assert "3 of 5 seeds diverged: judged on 2." in three
    assert "- 3_w4: no verdict: diverged" in text  # every seed diverged: said, not silent


def test_findings_show_a_key_a_run_lacks_as_a_dash(tmp_path):
    make_run(tmp_path / "0_a", width=1.0, seeds=ACCURACIES)
    edit(make_run(tmp_path / "1_b", width=1.0, seeds=BETTER), {"model.norm": "batch"})
    compare.write_summary(records.find_runs([tmp_path]), tmp_path / "out")
    text = (tmp_path / "out" / "findings.md").read_text()
    assert "None" not in text and "model.norm=-" in text


# ---- --baseline checked -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "baseline, says",
    [
        ("model.width=1,model.width=2", "model.width is given twice"),
        ("", "give KEY=VALUE pairs"),
        ("model.width=3", "only rows that did not complete match (2_w3 (failed))"),
    ],
)
def test_a_baseline_value_is_checked(tmp_path, capsys, baseline, says):
    make_run(tmp_path / "0_w1", width=1.0, seeds=ACCURACIES)
    make_run(tmp_path / "1_w2", width=2.0, seeds=BETTER)
    make_run(tmp_path / "2_w3", width=3.0, status="failed", error="boom")
    assert says in refused(capsys, tmp_path, baseline=baseline)


def test_the_findings_display_form_of_a_baseline_is_accepted(tmp_path, capsys):
    make_run(tmp_path / "0_w1", width=1.0, depth=1, seeds=ACCURACIES)
    make_run(tmp_path / "1_w2", width=2.0, depth=1, seeds=BETTER)
    rows = json_rows(capsys, tmp_path, baseline="model.depth=1, model.width=1")
    assert rows[1.0]["verdict"] == "baseline" and rows[2.0]["verdict"] == "better"


# ---- --metric ---------------------------------------------------------------------------------


def test_another_per_seed_measurement_is_judged(tmp_path, capsys):
    def shifted(by):
        def change(metrics):
            for copy in metrics["per_seed"]:  # accuracy at shifts 0-2, a new field
                shifted = copy["accuracy"] - by * (1 + copy["seed"] / 10)
                copy["shift_accuracy"] = [copy["accuracy"], shifted, 0.5 - by]

        return change

    edit(make_run(tmp_path / "0_w1", width=1.0, seeds=ACCURACIES), metrics=shifted(0.0))
    edit(make_run(tmp_path / "1_w2", width=2.0, seeds=ACCURACIES), metrics=shifted(0.1))
    rows = json_rows(capsys, tmp_path, baseline="model.width=1", metric="shift_accuracy.1")
    assert rows[2.0]["metric"] == "shift_accuracy.1"
    assert rows[2.0]["diff"] == pytest.approx(-12.0)  # points, as accuracy
    assert rows[2.0]["verdict"] == "worse"
    f1 = json_rows(capsys, tmp_path, baseline="model.width=1", metric="f1_macro")
    assert f1[2.0]["verdict"] == "identical" and f1[2.0]["metric"] == "f1_macro"


def test_a_one_seed_run_gives_its_measurement_from_the_top_level(tmp_path, capsys):
    for seed, accuracy in enumerate(ACCURACIES):
        for width, gap in ((1.0, 0.0), (2.0, 0.2)):
            folder = make_run(tmp_path / f"w{width}_s{seed}", width=width, seed=seed)
            edit(folder, metrics=lambda m, a=accuracy, g=gap: m.update(grad_ratio=a + g))
    rows = json_rows(capsys, tmp_path, baseline="model.width=1", metric="grad_ratio")
    assert rows[2.0]["diff"] == pytest.approx(0.2)  # not accuracy-like: its own units
    assert rows[2.0]["n"] == 5 and rows[2.0]["metric"] == "grad_ratio"


def test_an_unknown_metric_is_one_line_naming_the_ones_there_are(tmp_path, capsys):
    make_run(tmp_path / "0_w1", width=1.0, seeds=ACCURACIES)
    said = refused(capsys, tmp_path, baseline="model.width=1", metric="acuracy")
    assert said.startswith("error: --metric acuracy: no run has it; available: accuracy")
    assert "f1_macro" in said and "seed," not in said


# ---- issue 32 ---------------------------------------------------------------------------------


def test_two_preset_sweeps_with_out_write_the_folder(tmp_path, capsys):
    for sweep, declared in (("width", "model.width=1,model.depth=1"), ("depth", "model.depth=1")):
        for job, width in enumerate((1.0, 2.0)):
            folder = make_run(tmp_path / sweep / f"{job}_w{width}", width=width, seeds=ACCURACIES)
            edit(folder, {"baseline": declared})
    out = tmp_path / "out"
    assert compare.compare_command([tmp_path / "width", tmp_path / "depth"], out=out) == 0
    assert (out / "comparison.csv").exists() and (out / "findings.md").exists()
    # one declared baseline, which matches two rows of the same data set: a note, not a crash
    for job, width in enumerate((1.0, 2.0)):
        edit(tmp_path / "depth" / f"{job}_w{width}", {"baseline": "model.width=1,model.depth=1"})
        edit(tmp_path / "depth" / f"{job}_w{width}", {"model.fc": [64]})
    assert compare.compare_command([tmp_path / "width", tmp_path / "depth"], out=out) == 0
    text = (out / "findings.md").read_text()
    assert "No verdicts: the baseline the runs' presets declare does not fit them" in text
    assert "2 rows of the comparison match" in text


def test_a_baseline_with_an_equals_sign_unquoted_gets_a_quoting_hint(tmp_path, run_main):
    r = run_main(tmp_path, "train", "data=synthetic", "baseline=model.width=1")
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert "mismatched input '='" in line
    assert line.endswith("""quote a value that holds '=': 'baseline="model.width=1"'""")
    assert not list(tmp_path.glob("outputs/*"))  # refused before a run folder exists
