"""cnnlab.compare on hand-made run folders: no training, no Hydra, a fraction of a second."""

import csv
import io
import json
import statistics

import pytest
import yaml

from cnnlab import compare

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_run(
    folder,
    width=1.0,
    depth=1,
    seed=0,
    params=44426,
    accuracy=0.9,
    status="completed",
    error=None,
    epochs=2,
):
    """A run folder as `cnnlab train` leaves it: metrics.json, history.csv, .hydra/."""
    (folder / ".hydra").mkdir(parents=True)
    config = {
        "device": "cpu",
        "seed": seed,
        "resume": None,
        "logger": "none",
        # data.root differs per run, like two machines would: noise, never a column
        "data": {"name": "synthetic", "root": str(folder / "data"), "download": True},
        "model": {
            "name": "lenet5",
            "channels": [6, 16],
            "fc": [120, 84],
            "width": width,
            "depth": depth,
            "kernel_size": 5,
            "activation": "relu",
        },
        "trainer": {"epochs": epochs, "batch_size": 64, "lr": 0.001, "progress": True},
    }
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    overrides = [f"model.width={width}", f"model.depth={depth}", f"seed={seed}"]
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    metrics = {
        "status": status,
        "model": "lenet5",
        "data": "synthetic",
        "params": params,
        "conv_layers": 2 * depth,
        "accuracy": accuracy,
        "f1_macro": accuracy - 0.01,
        "per_class": {},
        "epochs_completed": epochs,
        "train_seconds": 1.5 + seed,
        "images_per_second": 1000.0 * (seed + 1),
        "device": "cpu",
        "seed": seed,
        "torch_version": "2.6.0",
    }
    if error:
        metrics["error"] = error
    (folder / "metrics.json").write_text(json.dumps(metrics))
    lines = ["epoch,train_loss,test_loss,test_accuracy,seconds"]
    lines += [f"{e},{1 / e:.3f},{1.2 / e:.3f},{accuracy:.3f},0.5" for e in range(1, epochs + 1)]
    (folder / "history.csv").write_text("\n".join(lines) + "\n")
    return folder


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
    assert len(compare.find_runs([sweep])) == 4
    for job in (2, 10, 1):
        (tmp_path / "many" / f"{job}_x").mkdir(parents=True)  # empty job folders: runs too
    names = [path.name for path in compare.find_runs([tmp_path / "many"])]
    assert names == ["1_x", "2_x", "10_x"]


def test_find_runs_mixes_sweeps_and_runs_without_duplicates(tmp_path, sweep):
    single = make_run(tmp_path / "runs" / "one")
    runs = compare.find_runs([sweep, single, sweep / "0_model.width=1,model.depth=1"])
    assert len(runs) == 5


def test_find_runs_unknown_path(tmp_path):
    with pytest.raises(ValueError, match="nowhere"):
        compare.find_runs([tmp_path / "nowhere"])


@pytest.mark.parametrize("fmt", compare.FORMATS)
def test_four_rows_in_every_format(sweep, fmt):
    text = compare.format_rows(compare.compare_table(compare.find_runs([sweep])), fmt)
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
    rows = compare.compare_table(compare.find_runs([sweep]))
    columns = list(rows[0])
    assert columns[:4] == ["run", "model", "model.width", "model.depth"]
    assert columns[4:] == [*compare.METRICS, "status"]  # no n (no seeds), no reason (no failure)
    for same_or_noise in ("model.kernel_size", "trainer.epochs", "data.root", "seed", "device"):
        assert same_or_noise not in columns
    assert [row["run"] for row in rows] == [
        sweep_job.name for sweep_job in sorted(sweep.iterdir()) if sweep_job.is_dir()
    ]
    assert {(row["model.width"], row["model.depth"]): row["params"] for row in rows} == GRID
    assert rows[0]["accuracy_%"] == pytest.approx(90.0)
    assert rows[0]["conv_layers"] == 2


def test_table_and_markdown_show_percent_with_two_decimals(sweep):
    rows = compare.compare_table(compare.find_runs([sweep]))
    for fmt in ("table", "md"):
        text = compare.format_rows(rows, fmt)
        assert "accuracy_%" in text and "93.00" in text and "44,426" in text


def test_sort_ascending_and_descending(sweep):
    runs = compare.find_runs([sweep])
    ascending = [row["params"] for row in compare.compare_table(runs, sort="params")]
    assert ascending == sorted(GRID.values())
    descending = [row["params"] for row in compare.compare_table(runs, sort="-params")]
    assert descending == sorted(GRID.values(), reverse=True)
    best = compare.compare_table(runs, sort="-accuracy")[0]  # alias of accuracy_%
    assert best["accuracy_%"] == pytest.approx(93.0)


def test_unknown_sort_key_and_format(sweep):
    rows = compare.compare_table(compare.find_runs([sweep]))
    with pytest.raises(ValueError, match="'speed'.*params"):
        compare.compare_table(compare.find_runs([sweep]), sort="speed")
    with pytest.raises(ValueError, match="'xml'.*table, csv, md, json"):
        compare.format_rows(rows, "xml")


def test_failed_run_is_a_row_with_its_reason(sweep):
    make_run(
        sweep / "4_model.width=4,model.depth=1",
        width=4,
        status="failed",
        error="CUDA out of memory.\nTried to allocate 2 GiB",
    )
    rows = compare.compare_table(compare.find_runs([sweep]))
    assert len(rows) == 5
    assert rows[-1]["status"] == "failed"
    assert rows[-1]["reason"] == "CUDA out of memory. Tried to allocate 2 GiB"  # one line
    assert compare.failed(rows) == [rows[-1]]


def test_partial_metrics_and_empty_folder_are_listed_with_reasons(tmp_path, sweep, capsys):
    broken = make_run(sweep / "4_model.width=4,model.depth=1", width=4)
    text = (broken / "metrics.json").read_text()
    (broken / "metrics.json").write_text(text[: len(text) // 2])  # killed while writing
    (sweep / "5_model.width=8,model.depth=1").mkdir()  # died before writing anything
    rows = {row["run"]: row for row in compare.compare_table(compare.find_runs([sweep]))}
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
    assert [h["epoch"] for h in loaded["history"]] == [1.0, 2.0]
    assert loaded["config"]["model.width"] == 1.0
    assert "seed=0" in loaded["overrides"]


def test_seeds_are_grouped_into_mean_and_std(tmp_path):
    accuracies = [0.91, 0.93, 0.96]
    for seed, accuracy in enumerate(accuracies):
        make_run(tmp_path / f"{seed}_seed={seed}", seed=seed, accuracy=accuracy)
    make_run(tmp_path / "3_model.width=2", width=2, params=120000)  # a different setting
    rows = compare.compare_table(compare.find_runs([tmp_path]))
    assert len(rows) == 2
    group, single = rows
    assert group["n"] == 3 and single["n"] == 1
    assert group["run"] == "0_seed=0 (+2)"
    percents = [100 * a for a in accuracies]
    assert group["accuracy_%"].mean == pytest.approx(statistics.mean(percents))
    assert group["accuracy_%"].std == pytest.approx(statistics.stdev(percents))
    assert group["params"] == 44426  # the same in every seed: a plain value, no "± 0"
    assert "seed" not in group

    table = compare.format_rows(rows, "table")
    mean, std = statistics.mean(percents), statistics.stdev(percents)
    assert f"{mean:.2f} ± {std:.2f}" in table
    parsed = list(csv.DictReader(io.StringIO(compare.format_rows(rows, "csv"))))
    assert float(parsed[0]["accuracy_%"]) == pytest.approx(mean)
    assert float(parsed[0]["accuracy_%_std"]) == pytest.approx(std)
    assert parsed[1]["accuracy_%_std"] == ""
    assert json.loads(compare.format_rows(rows, "json"))[0]["n"] == 3


def test_write_summary_files_and_plots(tmp_path, sweep):
    (sweep / "1_model.width=1,model.depth=2" / "history.csv").unlink()  # skipped in the plot
    (sweep / "4_model.width=4,model.depth=1").mkdir()  # no metrics: skipped in the plot
    out = tmp_path / "summary"
    rows = compare.write_summary(compare.find_runs([sweep]), out)
    assert len(rows) == 5
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
    rows = compare.summarize_sweep(sweep)
    assert len(rows) == 5 and len(compare.failed(rows)) == 1
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
    rows = compare.compare_table(compare.find_runs([tmp_path]))
    assert [row["run"] for row in rows] == [
        "0_model.channels=[6,16],model.width=1",
        "1_model.channels=[6,16],model.width=2",
        "2_model.channels=[8,16],model.width=2",
    ]
