"""cnnlab.compare on hand-made run folders: no training, no Hydra, a fraction of a second."""

import csv
import io
import json
import statistics
import subprocess
import sys

import pytest
from conftest import PNG_MAGIC, make_run

from cnnlab import compare, plots, records


def table_rows(*folders, sort=None):
    """compare_table over the runs in folders, as one dict per row."""
    return compare.compare_table(records.find_runs(folders), sort=sort).to_dict("records")


# width x depth: parameters grow with both, as in the chapter's exercise
GRID = {(1, 1): 44426, (1, 2): 50000, (2, 1): 120000, (2, 2): 150000}


@pytest.fixture
def sweep(tmp_path):
    """A 4-job sweep folder named the way the Hydra sweep config names jobs."""
    folder = tmp_path / "sweeps" / "2026-11-26" / "16-40-12"
    folder.mkdir(parents=True)
    (folder / "multirun.yaml").write_text("hydra: {}\n")
    for job, ((width, depth), params) in enumerate(GRID.items()):
        name = f"{job}_model.width={width},model.depth={depth}"
        make_run(folder / name, width=width, depth=depth, params=params, accuracy=0.9 + job / 100)
    return folder


def test_find_runs_in_a_sweep_in_natural_order(tmp_path, sweep):
    assert len(records.find_runs([sweep])) == 4
    for job in (2, 10, 1):
        (tmp_path / "many" / f"{job}_x").mkdir(parents=True)  # empty job folders: runs too
    names = [path.name for path in records.find_runs([tmp_path / "many"])]
    assert names == ["1_x", "2_x", "10_x"]


def test_find_runs_mixes_sweeps_and_runs_without_duplicates(tmp_path, sweep):
    single = make_run(tmp_path / "runs" / "one")
    runs = records.find_runs([sweep, single, sweep / "0_model.width=1,model.depth=1"])
    assert len(runs) == 5


def test_find_runs_unknown_path(tmp_path):
    with pytest.raises(ValueError, match="nowhere"):
        records.find_runs([tmp_path / "nowhere"])


@pytest.mark.parametrize("fmt", compare.FORMATS)
def test_four_rows_in_every_format(sweep, fmt):
    table = compare.compare_table(records.find_runs([sweep]))
    text = compare.format_table(table, fmt, wide=True)
    if fmt == "json":
        rows = json.loads(text)
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
    elif fmt == "md":
        rows = [line for line in text.splitlines() if line.startswith("|")][2:]
    else:
        rows = text.splitlines()[2:]  # header, dashes, then one line per run
    assert len(rows) == 4
    assert "0_model.width=1,model.depth=1" in text


def test_columns_are_the_differing_config_keys(sweep):
    rows = table_rows(sweep)
    columns = list(rows[0])
    assert columns[:5] == ["config", "run", "model", "model.width", "model.depth"]
    # no macs or receptive_field (no run has them), no n (no seeds), no reason (no failure)
    metrics = [m for m in compare.METRICS if m not in compare.OPTIONAL]
    assert columns[5:] == [*metrics, "status"]
    for same_or_noise in ("model.kernel_size", "trainer.epochs", "data.root", "seed", "device"):
        assert same_or_noise not in columns
    assert [row["run"] for row in rows] == [
        sweep_job.name for sweep_job in sorted(sweep.iterdir()) if sweep_job.is_dir()
    ]
    assert {(row["model.width"], row["model.depth"]): row["params"] for row in rows} == GRID
    assert rows[0]["accuracy_%"] == pytest.approx(90.0)
    assert rows[0]["conv_layers"] == 2


def test_table_and_markdown_show_percent_with_two_decimals(sweep):
    rows = compare.compare_table(records.find_runs([sweep]))
    assert "macs" not in rows and "receptive_field" not in rows
    for fmt in ("table", "md"):
        text = compare.format_table(rows, fmt)
        assert "accuracy_%" in text and "93.00" in text and "44,426" in text


def test_sort_ascending_and_descending(sweep):
    runs = records.find_runs([sweep])
    ascending = list(compare.compare_table(runs, sort="params")["params"])
    assert ascending == sorted(GRID.values())
    descending = list(compare.compare_table(runs, sort="-params")["params"])
    assert descending == sorted(GRID.values(), reverse=True)
    best = compare.compare_table(runs, sort="-accuracy").iloc[0]  # alias of accuracy_%
    assert best["accuracy_%"] == pytest.approx(93.0)


def test_sort_text_in_natural_order_numbers_as_numbers_blanks_last(tmp_path):
    for job, width in enumerate([0.5, 0.25, 2, 1, 0.75, 3, 1.5, 4, 8, 16, 0.125]):
        make_run(tmp_path / f"{job}_model.width={width}", width=width, accuracy=0.9 - job / 100)
    (tmp_path / "11_model.width=32").mkdir()  # no config, no metrics: blank width
    runs = records.find_runs([tmp_path])
    widths = list(compare.compare_table(runs, sort="model.width")["model.width"])
    assert widths[:-1] == [0.125, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 8, 16]
    assert widths[-1] is None
    names = list(compare.compare_table(runs, sort="-run")["run"])
    assert names[:3] == ["11_model.width=32", "10_model.width=0.125", "9_model.width=16"]
    accuracies = list(compare.compare_table(runs, sort="-accuracy")["accuracy_%"])
    assert accuracies[0] == pytest.approx(90.0) and accuracies[-1] != accuracies[-1]  # NaN


def test_unknown_sort_key_and_format(sweep):
    rows = compare.compare_table(records.find_runs([sweep]))
    with pytest.raises(ValueError, match="'speed'.*params"):
        compare.compare_table(records.find_runs([sweep]), sort="speed")
    with pytest.raises(ValueError, match="'xml'.*table, csv, md, json"):
        compare.format_table(rows, "xml")


def test_failed_run_is_a_row_with_its_reason(sweep):
    make_run(
        sweep / "4_model.width=4,model.depth=1",
        width=4,
        status="failed",
        error="CUDA out of memory.\nTried to allocate 2 GiB",
    )
    runs = compare.load_runs([sweep])
    rows = compare.compare_table(runs).to_dict("records")
    assert len(rows) == 5
    assert rows[-1]["status"] == "failed"
    assert rows[-1]["reason"] == "CUDA out of memory. Tried to allocate 2 GiB"  # one line
    assert compare.failed(runs) == [{k: rows[-1][k] for k in ("run", "status", "reason")}]


def test_partial_metrics_and_empty_folder_are_listed_with_reasons(tmp_path, sweep, capsys):
    broken = make_run(sweep / "4_model.width=4,model.depth=1", width=4)
    text = (broken / "metrics.json").read_text()
    (broken / "metrics.json").write_text(text[: len(text) // 2])  # killed while writing
    (sweep / "5_model.width=8,model.depth=1").mkdir()  # died before writing anything
    rows = {row["run"]: row for row in table_rows(sweep)}
    assert len(rows) == 6
    partial = rows["4_model.width=4,model.depth=1"]
    assert partial["status"] == "unreadable" and "metrics.json" in partial["reason"]
    empty = rows["5_model.width=8,model.depth=1"]
    assert empty["status"] == "missing" and empty["reason"] == "no metrics.json"
    # the empty run has no config: it must not turn every config key into a column
    assert "model.kernel_size" not in partial

    assert compare.compare_command([sweep]) == 0
    out = capsys.readouterr().out
    assert "unreadable" in out and "missing" in out and "no metrics.json" in out


def test_broken_history_and_missing_metrics(tmp_path):
    run = make_run(tmp_path / "run", epochs=3)
    (run / "metrics.json").unlink()
    (run / "history.csv").write_text((run / "history.csv").read_text()[:-12])  # cut last row
    loaded = compare.load_run(run)
    assert loaded["status"] == "missing"
    assert loaded["reason"].startswith("no metrics.json")
    assert list(loaded["history"]["epoch"]) == [1, 2]
    assert loaded["config"]["model.width"] == 1.0
    assert "seed=0" in loaded["overrides"]


def test_seeds_are_grouped_into_mean_and_std(tmp_path):
    accuracies = [0.91, 0.93, 0.96]
    for seed, accuracy in enumerate(accuracies):
        make_run(tmp_path / f"{seed}_seed={seed}", seed=seed, accuracy=accuracy)
    make_run(tmp_path / "3_model.width=2", width=2, params=120000)  # a different setting
    rows = compare.compare_table(records.find_runs([tmp_path]))
    assert len(rows) == 2
    group, single = rows.to_dict("records")
    assert group["n"] == 3 and single["n"] == 1
    assert group["run"] == "0_seed=0 (+2)"
    percents = [100 * a for a in accuracies]
    assert group["accuracy_%"] == pytest.approx(statistics.mean(percents))
    assert group["accuracy_%_std"] == pytest.approx(statistics.stdev(percents))
    assert group["params"] == 44426  # the same in every seed: a plain value, no "± 0"
    assert "params_std" not in group and "seed" not in group

    table = compare.format_table(rows, "table")
    mean, std = statistics.mean(percents), statistics.stdev(percents)
    assert f"{mean:.2f} ± {std:.2f}" in table
    parsed = list(csv.DictReader(io.StringIO(compare.format_table(rows, "csv"))))
    assert float(parsed[0]["accuracy_%"]) == pytest.approx(mean)
    assert float(parsed[0]["accuracy_%_std"]) == pytest.approx(std)
    assert parsed[1]["accuracy_%_std"] == ""
    assert json.loads(compare.format_table(rows, "json"))[0]["n"] == 3


def test_write_summary_files_and_plots(tmp_path, sweep):
    (sweep / "1_model.width=1,model.depth=2" / "history.csv").unlink()  # skipped in the plot
    (sweep / "4_model.width=4,model.depth=1").mkdir()  # no metrics: skipped in the plot
    out = tmp_path / "summary"
    table = compare.write_summary(records.find_runs([sweep]), out)
    assert len(table) == 5
    with open(out / "comparison.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 5
    assert (out / "comparison.md").read_text().count("| 0_model.width=1,model.depth=1 |") == 1
    for name in ("accuracy_vs_params.png", "loss_curves.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_compare_command_exit_codes(tmp_path, sweep, capsys):
    make_run(sweep / "4_model.width=4,model.depth=1", width=4, status="diverged", error="nan")
    assert compare.compare_command([sweep], fmt="json", out=tmp_path / "out") == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == 5  # the "wrote ..." note went to stderr
    assert (tmp_path / "out" / "comparison.md").exists()

    for kwargs in (
        {"paths": [tmp_path / "nowhere"]},
        {"paths": [sweep], "sort": "bogus"},
        {"paths": [sweep], "fmt": "xml"},
    ):
        assert compare.compare_command(**kwargs) == 2
        captured = capsys.readouterr()
        assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
        assert captured.out == ""


def test_summarize_sweep_writes_into_the_sweep(sweep, capsys):
    make_run(sweep / "4_model.width=4,model.depth=1", width=4, status="failed", error="boom")
    runs = compare.load_runs([sweep])
    rows = compare.summarize_sweep(sweep, runs)
    assert len(rows) == 5 and len(compare.failed(runs)) == 1
    for name in ("comparison.csv", "comparison.md", "accuracy_vs_params.png", "loss_curves.png"):
        assert (sweep / name).stat().st_size > 0
    assert "boom" in capsys.readouterr().out
    # summarising again finds the same jobs: neither the summary files nor a log beside
    # multirun.yaml make the sweep folder look like a run
    (sweep / "train.log").write_text("sweep log\n")
    assert len(compare.summarize_sweep(sweep)) == 5


def test_run_names_drop_the_overrides_every_job_shares(tmp_path):
    names = [
        "0_data=digits,model.channels=[6,16],model.width=1",
        "1_data=digits,model.channels=[6,16],model.width=2",
        "2_data=digits,model.channels=[8,16],model.width=2",
    ]
    for width, name in enumerate(names, start=1):
        make_run(tmp_path / name, width=width)  # three configs: three rows
    assert [row["run"] for row in table_rows(tmp_path)] == [
        "0_model.channels=[6,16],model.width=1",
        "1_model.channels=[6,16],model.width=2",
        "2_model.channels=[8,16],model.width=2",
    ]


def test_a_multi_seed_run_is_mean_std_and_n(tmp_path):
    accuracies = [0.91, 0.92, 0.94, 0.95]
    make_run(tmp_path / "multi", seeds=accuracies, params=44426)
    (row,) = table_rows(tmp_path)
    percents = [100 * a for a in accuracies]
    assert row["run"] == "multi" and row["n"] == 4
    assert row["accuracy_%"] == pytest.approx(statistics.mean(percents))
    assert row["accuracy_%_std"] == pytest.approx(statistics.stdev(percents))
    assert row["f1_macro_std"] == pytest.approx(statistics.stdev(accuracies))
    assert row["params"] == 44426 and "params_std" not in row  # the run's own value
    table = compare.format_table(compare.compare_table([tmp_path / "multi"]))
    mean, std = statistics.mean(percents), statistics.stdev(percents)
    assert f"{mean:.2f} ± {std:.2f}" in table


def test_multi_seed_and_single_seed_runs_of_one_config_share_a_row(tmp_path):
    multi, single = [0.91, 0.92, 0.94, 0.95], [0.90, 0.97]
    make_run(tmp_path / "0_seeds=4", seeds=multi)
    for job, accuracy in enumerate(single, start=1):  # seeds 4 and 5: two more seeds
        make_run(tmp_path / f"{job}_seed={job + 3}", seed=job + 3, accuracy=accuracy)
    make_run(tmp_path / "3_model.width=2", width=2, seeds=[0.8, 0.82])  # another config
    rows = table_rows(tmp_path)
    assert [(row["run"], row["n"]) for row in rows] == [
        ("0_seeds=4 (+2)", 6),
        ("3_model.width=2", 2),
    ]
    percents = [100 * a for a in multi + single]  # the six seeds, each counted once
    assert rows[0]["accuracy_%"] == pytest.approx(statistics.mean(percents))
    assert rows[0]["accuracy_%_std"] == pytest.approx(statistics.stdev(percents))
    assert list(rows[0])[:4] == ["config", "run", "model", "model.width"]  # seed, seeds: none


def test_macs_and_receptive_field_columns_after_params(tmp_path, capsys):
    make_run(tmp_path / "0_a", params=44426, macs=289_886, receptive_field=16)
    make_run(tmp_path / "1_b", width=2, params=120000, macs=1_100_000, receptive_field=[5, 9])
    make_run(tmp_path / "2_c", width=3, params=200000)  # an older run without them
    rows = table_rows(tmp_path)
    assert list(rows[0])[4:8] == ["params", "macs", "receptive_field", "conv_layers"]
    assert [row["receptive_field"] for row in rows[:2]] == [16, [5, 9]]  # as inspect has it
    text = compare.format_table(compare.compare_table(records.find_runs([tmp_path])))
    assert "289,886" in text and "5x9" in text

    runs = [tmp_path / "0_a", tmp_path / "1_b"]
    assert compare.compare_command(runs, fmt="json") == 0
    parsed = json.loads(capsys.readouterr().out)
    assert [row["macs"] for row in parsed] == [289_886, 1_100_000]


def png_size(file):
    """(width, height) of a PNG, from its IHDR chunk."""
    data = file.read_bytes()
    assert data.startswith(PNG_MAGIC)
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_plots_of_multi_seed_runs_with_macs_and_a_facet_per_third_key(tmp_path):
    runs = tmp_path / "runs"
    for job, (width, depth) in enumerate(GRID):
        folder = runs / f"{job}_w{width}d{depth}"
        make_run(folder, width=width, depth=depth, seeds=[0.9, 0.92], macs=1000 * width * depth)
    table = compare.write_summary(records.find_runs([runs]), tmp_path / "two_keys")
    assert list(table["n"]) == [2] * 4
    accuracy = png_size(tmp_path / "two_keys" / "accuracy_vs_params.png")
    losses = png_size(tmp_path / "two_keys" / "loss_curves.png")
    assert accuracy[1] > 1.5 * losses[1]  # two rows of panels: against params and MACs
    # a third varied key: a colour of its own, no more panels, no wider than 1600 px
    make_run(runs / "4_w1d1k3", width=1, depth=1, seeds=[0.9, 0.91])
    config = runs / "4_w1d1k3" / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("kernel_size: 5", "kernel_size: 3"))
    compare.write_summary(records.find_runs([runs]), tmp_path / "three_keys")
    assert png_size(tmp_path / "three_keys" / "loss_curves.png")[0] <= 1600


def test_each_row_of_accuracy_panels_names_its_measure(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    for job, (width, depth) in enumerate(GRID):
        make_run(runs / f"{job}_w{width}d{depth}", width=width, depth=depth, macs=1000 * width)
    make_run(runs / "4_e5", width=1, depth=1, macs=500, epochs=5)  # another epoch count
    grids = []
    monkeypatch.setattr(plots, "save", lambda grid, file: grids.append(grid))
    compare.write_summary(records.find_runs([runs]), tmp_path / "out")
    axes = grids[0].axes  # accuracy: a row per measure, a panel per epoch count
    assert [[a.get_xlabel() for a in row] for row in axes] == [
        ["parameters"] * 2,
        ["MACs per input"] * 2,
    ]
    assert [a.get_title() for a in axes[0]] == ["2 epochs", "5 epochs"]
    assert [a.get_title() for a in grids[1].axes[0]] == ["2 epochs", "5 epochs"]  # losses


def test_importing_compare_loads_pandas_but_not_seaborn_torch_or_hydra():
    code = "import sys, cnnlab.compare; print(sorted(m for m in ('pandas', 'seaborn', "
    code += "'matplotlib', 'torch', 'hydra') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['pandas']"
