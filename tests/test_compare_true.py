"""Issue 18: `cnnlab compare` and the sweep summary tell the truth: every key that differs is
a column, every folder is a row with its reason (no traceback), a sweep with a failed job
exits 1, diverged copies of a seeds stack are counted apart, json numbers are numbers."""

import csv
import io
import json
import re
import statistics

import pytest
import yaml
from conftest import QUICK, cnnlab_train

from cnnlab import cli, compare, data, plots, records

pytestmark = pytest.mark.usefixtures("one_thread")


def compare_cli(capsys, *args):
    """`cnnlab compare ARGS` in this process: (exit code, stdout, stderr)."""
    code = cli.main(["compare", *map(str, args)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def json_rows(capsys, *args):
    code, out, _ = compare_cli(capsys, *args, "--format", "json")
    assert code == 0
    return {row["run"]: row for row in json.loads(out)}


def table_cells(text):
    """The rows of a `--format table` text as dicts, cut at the columns its dashes mark."""
    header, dashes, *lines = text.splitlines()
    spans = [match.span() for match in re.finditer(r"-+", dashes)]
    names = [header[a:b].strip() for a, b in spans]
    rows = [dict(zip(names, (line[a:b].strip() for a, b in spans), strict=True)) for line in lines]
    return {row["run"]: row for row in rows}


def hand_run(folder, model=None, metrics=None):
    """A run folder written by hand: .hydra/config.yaml holding `model`, and metrics.json."""
    (folder / ".hydra").mkdir(parents=True)
    config = {"seed": 0, "data": {"name": "synthetic"}, "model": model or {"name": "lenet5"}}
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    base = {"status": "completed", "model": config["model"]["name"], "params": 1000}
    (folder / "metrics.json").write_text(json.dumps({**base, "accuracy": 0.9, **(metrics or {})}))
    return folder


# ---------------------------------------------------------------- 18.1 keys some runs lack


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    """Real runs: plain LeNet-5, LeNet-5 with batch norm, same padding and GELU, and an MLP."""
    root = tmp_path_factory.mktemp("trio")
    batch = ["model.norm=batch", "model.padding=same", "model.activation=gelu"]
    for name, overrides in {"plain": [], "batch": batch, "mlp": ["model=mlp"]}.items():
        assert cnnlab_train(root / name, *QUICK, *overrides) == 0
    return root


def test_a_key_the_mlp_lacks_is_a_column(trio, capsys):
    rows = json_rows(capsys, trio)
    assert {row["model"] for row in rows.values()} == {"lenet5", "mlp"}
    for key, plain, batch, mlp in [
        ("model.norm", "none", "batch", None),  # the MLP has no such key
        ("model.padding", 0, "same", None),
        ("model.activation", "relu", "gelu", "relu"),
    ]:
        assert (rows["plain"][key], rows["batch"][key], rows["mlp"][key]) == (plain, batch, mlp)
    assert rows["mlp"]["model.hidden"] == [128] and rows["plain"]["model.hidden"] is None

    code, out, _ = compare_cli(capsys, trio, "--wide")
    assert code == 0
    cells = table_cells(out)
    assert [cells[run]["model.norm"] for run in ("plain", "batch", "mlp")] == ["none", "batch", "-"]

    code, out, _ = compare_cli(capsys, trio, "--format", "csv")
    by_run = {row["run"]: row for row in csv.DictReader(io.StringIO(out))}
    assert (by_run["batch"]["model.norm"], by_run["mlp"]["model.norm"]) == ("batch", "")


def test_plots_of_the_trio(trio, tmp_path, capsys):
    code, _, err = compare_cli(capsys, trio, "--out", tmp_path / "out")
    assert code == 0 and "wrote" in err
    for name in ("accuracy_vs_params.png", "loss_curves.png"):
        assert (tmp_path / "out" / name).read_bytes()[:4] == b"\x89PNG"
    assert "| batch " in (tmp_path / "out" / "comparison.md").read_text()


def test_depths_of_a_sweep_beside_an_mlp_stay_apart_in_table_and_plots(tmp_path, monkeypatch):
    lenet = {"name": "lenet5", "channels": [6, 16], "depth": 1, "norm": "none"}
    for job, depth in enumerate([1, 2, 1, 2]):
        hand_run(
            tmp_path / f"{job}_model.depth={depth},seed={job}",
            {**lenet, "depth": depth, "norm": "batch" if job > 1 else None},
            {"accuracy": 0.9 + job / 100, "params": 1000 * depth},
        )
    hand_run(tmp_path / "4_model=mlp", {"name": "mlp", "hidden": [128]}, {"params": 5000})
    for job in tmp_path.iterdir():
        (job / "history.csv").write_text("epoch,test_loss\n1,2.0\n2,1.0\n")
    runs = records.find_runs([tmp_path])
    table = compare.compare_table(runs)
    assert len(table) == 5  # five configurations: none merged
    assert list(table["model.depth"]) == [1, 2, 1, 2, None]
    assert list(table["model.norm"]) == [None, None, "batch", "batch", None]
    mlp = table_cells(compare.format_table(table, wide=True))["4_model=mlp"]
    assert (mlp["model.channels"], mlp["model.depth"], mlp["model.hidden"]) == ("-", "-", "[128]")

    drawn = []
    roles = plots.roles_of
    monkeypatch.setattr(plots, "save", lambda grid, file: None)
    monkeypatch.setattr(plots, "roles_of", lambda *a: drawn.append(roles(*a)) or drawn[-1])
    compare.write_summary(runs, tmp_path / "out")
    for plot, (frame, role) in zip(("accuracy", "losses"), drawn, strict=True):
        lines = frame.groupby(role["hue"])["folder" if plot == "accuracy" else "epoch"].size()
        assert len(lines) == 5, (plot, lines)  # a line or a point per configuration
    # a key a run lacks (the MLP's norm) or sets null (the first LeNet-5 runs): not named
    frame, role = drawn[0]
    assert role["hue"] == "config"
    assert set(frame["config"]) == {
        *(f"lenet5 depth={d}" for d in (1, 2)),
        *(f"lenet5 depth={d} norm=batch" for d in (1, 2)),
        "mlp",
    }


# ---------------------------------------------------------------- 18.2 ordinary folders


def test_an_empty_folder_is_a_missing_row(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, out, err = compare_cli(capsys, tmp_path / "empty")
    assert code == 0 and err == ""
    assert "empty" in out and "missing" in out and "no metrics.json" in out


def test_a_folder_whose_only_run_failed(tmp_path, capsys):
    folder = tmp_path / "sweep" / "0_model.width=2"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text('{"status": "failed", "error": "CUDA out of memory"}')
    for fmt in compare.FORMATS:
        code, out, _ = compare_cli(capsys, tmp_path / "sweep", "--format", fmt)
        assert code == 0 and "0_model.width=2" in out and "CUDA out of memory" in out


def test_metrics_that_are_not_json(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text("not json\n")
    code, out, _ = compare_cli(capsys, tmp_path / "run")
    assert code == 0 and "unreadable" in out and "metrics.json unreadable: Expecting" in out
    assert compare_cli(capsys, tmp_path / "run", "--out", tmp_path / "out")[0] == 0
    assert "unreadable" in (tmp_path / "out" / "comparison.md").read_text()


def test_a_sweep_whose_jobs_all_fail_exits_1_naming_them(tmp_path, monkeypatch, capsys):
    def broken(cfg):
        raise OSError("the data disk went away")

    monkeypatch.setattr(data, "load", broken)  # after the checks: the jobs fail as they run
    sweep = tmp_path / "sweep"
    assert cnnlab_train(sweep, *QUICK, "model.width=1,2", multirun=True) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("error: 2 job(s)")]
    assert "0_model.width=1 (failed)" in line and "1_model.width=2 (failed)" in line
    assert "the data disk went away" in (sweep / "comparison.md").read_text()


def test_a_failed_summary_fails_the_sweep(tmp_path, monkeypatch, capsys):
    def broken(sweep_dir, runs=None):
        raise RuntimeError("no room for the plots")

    monkeypatch.setattr(compare, "summarize_sweep", broken)
    assert cnnlab_train(tmp_path / "sweep", *QUICK, "model.width=1", multirun=True) == 1
    err = capsys.readouterr().err
    assert f"error: the summary of {tmp_path / 'sweep'} failed: RuntimeError: no room" in err
    assert "job(s) did not complete" not in err  # the one job completed


def test_json_receptive_field_is_a_number_or_a_list(tmp_path, capsys):
    hand_run(tmp_path / "a", metrics={"receptive_field": 16})
    hand_run(tmp_path / "b", {"name": "lenet5", "kernel_size": [3, 5]}, {"receptive_field": [5, 9]})
    hand_run(tmp_path / "c", {"name": "lenet5", "kernel_size": 3}, {"receptive_field": [7, 7]})
    rows = json_rows(capsys, tmp_path)
    assert [rows[run]["receptive_field"] for run in "abc"] == [16, [5, 9], 7]
    code, out, _ = compare_cli(capsys, tmp_path, "--wide")
    cells = table_cells(out)
    assert [cells[run]["receptive_field"] for run in "abc"] == ["16", "5x9", "7"]
    code, out, _ = compare_cli(capsys, tmp_path, "--format", "csv")
    fields = [row["receptive_field"] for row in csv.DictReader(io.StringIO(out))]
    assert fields == ["16", "5x9", "7"]


# ---------------------------------------------------------------- 18.5 diverged copies


def stack_run(folder, accuracies, **model):
    """A seeds=N run; an accuracy of None is a copy that diverged."""
    per_seed = [
        {"seed": s, "accuracy": a, "f1_macro": a, "status": "completed"}
        if a is not None
        else {"seed": s, "accuracy": None, "f1_macro": None, "status": "diverged"}
        for s, a in enumerate(accuracies)
    ]
    return hand_run(folder, {"name": "lenet5", **model}, {"per_seed": per_seed})


def test_a_diverged_copy_is_left_out_of_mean_std_and_n(tmp_path, capsys):
    stack_run(tmp_path / "0_stack", [0.90, None, 0.92, 0.94, 0.96])
    stack_run(tmp_path / "1_whole", [0.80, 0.82], width=2)
    rows = json_rows(capsys, tmp_path)
    stack, whole = rows["0_stack"], rows["1_whole"]
    finished = [90, 92, 94, 96]
    assert (stack["n"], whole["n"]) == (4, 2)
    assert (stack.get("diverged"), whole.get("diverged")) == (1, 0)
    assert stack["accuracy_%"] == pytest.approx(statistics.mean(finished))
    assert stack["accuracy_%_std"] == pytest.approx(statistics.stdev(finished))
    code, out, _ = compare_cli(capsys, tmp_path, "--wide")
    cells = table_cells(out)
    assert (cells["0_stack"]["n"], cells["1_whole"]["n"]) == ("4, 1 diverged", "2")
    assert "diverged" not in cells["0_stack"]  # the count is in the n column


def test_seeds_of_one_config_in_a_stack_and_single_runs(tmp_path):
    """Single runs of the stack's config join its row; a single run that diverged keeps a
    row of its own (status diverged) and is not counted as a diverged copy of the stack."""
    stack_run(tmp_path / "0_seeds=3", [0.90, None, 0.92])
    hand_run(tmp_path / "1_seed=5", metrics={"accuracy": 0.94, "seed": 5})
    hand_run(tmp_path / "2_seed=6", metrics={"status": "diverged", "accuracy": None, "seed": 6})
    group, alone = compare.compare_table(records.find_runs([tmp_path])).to_dict("records")
    assert (group["run"], group["n"], group.get("diverged")) == ("0_seeds=3 (+1)", 3, 1)
    assert group["accuracy_%"] == pytest.approx(92.0)
    assert (alone["run"], alone["status"], alone["n"], alone["diverged"]) == (
        "2_seed=6",
        "diverged",
        1,
        0,
    )
