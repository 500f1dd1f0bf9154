"""`cnnlab compare` end to end, through cnnlab.cli.main on hand-made run folders.

Issue 19: `cnnlab compare` over folders and arguments nobody meant to give it. Each case
ends in one `error:` line (bad argument: exit 2) or a row with its reason (exit 0); never
a traceback, never a hang, and each run counted once.

Issue 18: `cnnlab compare` and the sweep summary tell the truth: every key that differs is
a column, every folder is a row with its reason (no traceback), a sweep with a failed job
exits 1, diverged copies of a seeds stack are counted apart, json numbers are numbers.

Issue 32: a sweep's table and plots readable at a glance. Rows are named by what tells
their configuration apart (`mlp`, `lenet5`, `lenet5 width=2 depth=1`, `lenet5 kernel3`),
the text table fits 120 columns unless --wide, plots are at most ~1600 px wide with
short legend labels. The figures are read back as saved, as test_pictures.py does."""

import csv
import io
import json
import os
import re
import statistics
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import CNNLAB, QUICK, cli_env, cnnlab_train, compare_cli
from matplotlib.figure import Figure

from cnnlab import compare, data, plots, records

COMPLETED = {"status": "completed", "model": "lenet5", "params": 44426, "accuracy": 0.9}


def write_run(folder, metrics=COMPLETED, config=None):
    """A run folder: metrics.json (a dict is dumped, text written as is) and a config."""
    (folder / ".hydra").mkdir(parents=True)
    config = config or {"seed": 0, "model": {"name": "lenet5", "width": 1.0}}
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    text = metrics if isinstance(metrics, str) else json.dumps(metrics)
    (folder / "metrics.json").write_text(text)
    return folder


def rows_of(capsys, *paths):
    code, out, err = compare_cli(capsys, *paths, "--format", "json")
    assert code == 0 and err == ""
    return json.loads(out)


def row_of(capsys, folder):
    (row,) = rows_of(capsys, folder)
    return row


DEEP = "[" * 100_000 + "]" * 100_000


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


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    """Real runs: plain LeNet-5, LeNet-5 with batch norm, same padding and GELU, and an MLP."""
    root = tmp_path_factory.mktemp("trio")
    batch = ["model.norm=batch", "model.padding=same", "model.activation=gelu"]
    for name, overrides in {"plain": [], "batch": batch, "mlp": ["model=mlp"]}.items():
        assert cnnlab_train(root / name, *QUICK, *overrides) == 0
    return root


def stack_run(folder, accuracies, **model):
    """A seeds=N run; an accuracy of None is a copy that diverged."""
    per_seed = [
        {"seed": s, "accuracy": a, "f1_macro": a, "status": "completed"}
        if a is not None
        else {"seed": s, "accuracy": None, "f1_macro": None, "status": "diverged"}
        for s, a in enumerate(accuracies)
    ]
    return hand_run(folder, {"name": "lenet5", **model}, {"per_seed": per_seed})


def png_width(file: Path) -> int:
    return int.from_bytes(file.read_bytes()[16:20], "big")  # the IHDR chunk's width


def legend_labels(fig: Figure) -> list[str]:
    (legend,) = fig.legends
    return [text.get_text() for text in legend.get_texts()]


def run(model: str, choices: dict | None = None, **keys) -> dict:
    """What records.load_run gives for a run folder, less what config_names does not read."""
    config = {"model.name": model, "seed": 0, **{f"model.{k}": v for k, v in keys.items()}}
    return {"metrics": {"model": model}, "config": config, "choices": choices or {}}


@pytest.mark.parametrize(
    "metrics, reason",
    [
        ({**COMPLETED, "per_seed": "0.9,0.91"}, "per_seed is '0.9,0.91', not a list of objects"),
        ({**COMPLETED, "per_seed": {"0": 0.9}}, "per_seed is {'0': 0.9}, not a list of objects"),
        ({**COMPLETED, "per_seed": [0.9, 0.91]}, "per_seed is [0.9, 0.91], not a list of objects"),
        ({**COMPLETED, "per_seed": [{"accuracy": "0.9"}]}, "per_seed[0].accuracy is '0.9'"),
        ({**COMPLETED, "accuracy": "0.93"}, "accuracy is '0.93', not a number"),
        ({**COMPLETED, "accuracy": True}, "accuracy is True, not a number"),
        ({**COMPLETED, "params": [1, 2]}, "params is [1, 2], not a number"),
        ('{"status": "completed", "accuracy": Infinity}', "accuracy is inf: out of range"),
        ('{"status": "completed", "macs": -Infinity}', "macs is -inf: out of range"),
        ('{"status": "completed", "params": 1e400}', "params is inf: out of range"),
        ({**COMPLETED, "params": 10**30}, "params is 1000000000000000000000000000000: out of"),
        ('{"status": "completed", "params": 1' + "0" * 5000 + "}", "unreadable: Exceeds the limit"),
        ({**COMPLETED, "status": ["completed"]}, "status is ['completed'], not a string"),
        ({**COMPLETED, "model": {"name": "lenet5"}}, "model is {'name': 'lenet5'}, not a string"),
        ({**COMPLETED, "receptive_field": "16"}, "receptive_field is '16', not a number or a"),
        ({**COMPLETED, "receptive_field": [5.5, 9]}, "receptive_field is [5.5, 9], not a number"),
        ('[{"status": "completed"}]', "metrics.json: empty or not an object"),
        ('"completed"', "metrics.json: empty or not an object"),
        ("", "metrics.json: empty or not an object"),
        (DEEP, "metrics.json unreadable: maximum recursion depth exceeded"),
        (b"\xff\xfe{}", "metrics.json unreadable: 'utf-8' codec can't decode"),
    ],
    ids=lambda value: None if isinstance(value, str) and len(value) < 60 else "",
)
def test_metrics_nobody_wrote_is_a_row_with_a_reason(tmp_path, capsys, metrics, reason):
    run = write_run(tmp_path / "run")
    if isinstance(metrics, bytes):
        (run / "metrics.json").write_bytes(metrics)
    else:
        (run / "metrics.json").write_text(
            metrics if isinstance(metrics, str) else json.dumps(metrics)
        )
    row = row_of(capsys, run)
    assert row["status"] == "unreadable" and reason in row["reason"]
    assert len(row["reason"]) < 200  # a huge value is cut short
    code, out, _ = compare_cli(capsys, run, "--wide")  # the table prints it on one line
    assert code == 0 and len(out.splitlines()) == 3


def test_nan_in_metrics_is_no_value(tmp_path, capsys):
    write_run(tmp_path / "run", '{"status": "completed", "params": 10, "f1_macro": NaN}')
    row = row_of(capsys, tmp_path / "run")
    assert row["status"] == "completed" and row["f1_macro"] is None


def test_history_that_is_garbage_still_plots(tmp_path, capsys):
    for job, garbage in enumerate([b"\x00\x01\x02\xff" * 100, b'epoch,test_loss\n"a,1\n', b"x"]):
        run = write_run(tmp_path / f"{job}_run", config={"model": {"width": job}})
        (run / "history.csv").write_bytes(garbage)
    code, out, _ = compare_cli(capsys, tmp_path, "--out", tmp_path / "out")
    assert code == 0 and out.count("completed") == 3
    assert (tmp_path / "out" / "loss_curves.png").stat().st_size > 0


@pytest.mark.parametrize(
    "history",
    ["epoch,test_loss\nx,1\ny,2\n", "epoch,test_loss\n1,inf\n2,nan\n", "epoch\n1\n", "\n\n"],
)
def test_a_history_without_a_point_plots_empty(tmp_path, capsys, history):
    run = write_run(tmp_path / "run")
    (run / "history.csv").write_text(history)
    code, out, _ = compare_cli(capsys, run, "--out", tmp_path / "out")
    assert code == 0 and "completed" in out
    assert (tmp_path / "out" / "loss_curves.png").stat().st_size > 0


def test_overrides_not_utf8(tmp_path, capsys):
    run = write_run(tmp_path / "run")
    (run / ".hydra" / "overrides.yaml").write_bytes(b"- model.width=\xff\n")
    assert row_of(capsys, run)["status"] == "completed"


@pytest.mark.parametrize(
    "text, reason",
    [
        ("- model.width=2\n", ".hydra/config.yaml is ['model.width=2'], not a mapping"),
        ("just text\n", ".hydra/config.yaml is 'just text', not a mapping"),
        ("model: {width: [1\n", ".hydra/config.yaml unreadable: while parsing a flow"),
        ("a: !!python/object:os.system {}\n", ".hydra/config.yaml unreadable: could not det"),
        (b"model: \xff\n", ".hydra/config.yaml unreadable: 'utf-8' codec can't decode"),
    ],
)
def test_a_config_that_is_not_a_mapping(tmp_path, capsys, text, reason):
    write_run(tmp_path / "0_good", config={"model": {"width": 1}})
    write_run(tmp_path / "2_good", config={"model": {"width": 2}})
    bad = write_run(tmp_path / "1_bad")
    config = bad / ".hydra" / "config.yaml"
    config.write_bytes(text) if isinstance(text, bytes) else config.write_text(text)
    good, row, _ = rows_of(capsys, tmp_path)
    assert row["status"] == "completed" and row["reason"].startswith(reason)
    assert good["reason"] is None and row["model.width"] is None  # its keys are unknown


def test_metrics_json_that_is_a_directory(tmp_path, capsys):
    (tmp_path / "run" / "metrics.json").mkdir(parents=True)
    row = row_of(capsys, tmp_path / "run")
    assert row["status"] == "unreadable"
    assert row["reason"] == "metrics.json unreadable: not a regular file"


@pytest.mark.parametrize("name", ["metrics.json", "history.csv", ".hydra/config.yaml"])
def test_a_fifo_does_not_hang(tmp_path, name):
    run = write_run(tmp_path / "run")
    (run / name).unlink(missing_ok=True)
    os.mkfifo(run / name)
    r = subprocess.run(
        [CNNLAB, "compare", run, "--format", "json"],
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0 and "Traceback" not in r.stderr
    (row,) = json.loads(r.stdout)
    if name == "history.csv":  # no curve to draw, nothing wrong with the run
        assert row["status"] == "completed"
    else:
        assert "not a regular file" in row["reason"]


@pytest.mark.parametrize("link", ["self", "sub/up"])
def test_a_link_back_up_counts_each_run_once(tmp_path, capsys, link):
    top = tmp_path / "top"
    write_run(top / "run")
    if link == "sub/up":
        (top / "sub").mkdir()  # holding only the link: no run folder
    (top / link).symlink_to(top if link == "self" else "..")
    (top / "loop").symlink_to("loop")  # a link to itself: no folder at all
    assert [row["run"] for row in rows_of(capsys, top)] == ["run"]
    assert len(rows_of(capsys, top, top / "run", top / "self" if link == "self" else top)) == 1


def test_a_folder_name_with_a_newline_stays_one_line(tmp_path, capsys):
    write_run(tmp_path / "a\nb\x1b[31m")
    write_run(tmp_path / "c", config={"model": {"width": 2}})
    code, out, _ = compare_cli(capsys, tmp_path, "--wide")
    assert code == 0 and len(out.splitlines()) == 4 and "a\\nb\\x1b[31m" in out
    assert "\x1b" not in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sort", "speed"], "error: unknown sort key 'speed'; columns: config, run, model"),
        (["--sort", "-"], "error: unknown sort key '-'"),
        (["--format", "xml"], "error: argument --format: invalid choice: 'xml'"),
        (["--bogus"], "error: unrecognized arguments: --bogus"),
        ([], "error: the following arguments are required: PATH"),
        (["--out"], "error: argument --out: expected one argument"),
    ],
)
def test_bad_arguments_are_one_error_line(tmp_path, capsys, args, message):
    write_run(tmp_path / "run")
    paths = [tmp_path / "run"] if args else []
    code, out, err = compare_cli(capsys, *paths, *args)
    assert code == 2 and out == ""
    assert err.startswith(message) and err.count("\n") == 1


def test_paths_that_are_not_folders(tmp_path, capsys):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "notes.txt").write_text("no run here\n")
    for path, message in [
        ("fifo", "not a folder"),
        ("loop", "no such folder"),
        ("nowhere", "no such folder"),
        ("nothing", "no run folders in"),
    ]:
        code, out, err = compare_cli(capsys, tmp_path / path)
        assert code == 2 and out == "" and err.startswith(f"error: {message}")
        assert str(tmp_path / path) in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "out, why",
    [
        ("file/summary", "Not a directory"),  # under a regular file: root cannot either
        ("file", "File exists"),
        ("x" * 300, "File name too long"),
        ("/dev/null", "File exists"),
        ("/proc/summary", "No such file or directory"),
    ],
)
def test_an_out_folder_that_cannot_be_made(tmp_path, capsys, out, why):
    write_run(tmp_path / "run")
    (tmp_path / "file").write_text("keep me\n")
    out = out if out.startswith("/") else tmp_path / out
    code, stdout, err = compare_cli(capsys, tmp_path / "run", "--out", out)
    assert code == 2 and stdout == ""  # refused before the table is printed
    assert err == f"error: --out {out}: cannot make that folder: {why}\n"
    assert (tmp_path / "file").read_text() == "keep me\n"


def test_an_out_folder_with_a_folder_in_the_way(tmp_path, capsys):
    write_run(tmp_path / "run")
    (tmp_path / "out" / "comparison.csv").mkdir(parents=True)
    code, out, err = compare_cli(capsys, tmp_path / "run", "--out", tmp_path / "out")
    assert code == 1 and "completed" in out  # the table was printed
    assert err.startswith(f"error: cannot write the summary into {tmp_path / 'out'}: ")
    assert "Is a directory" in err and err.count("\n") == 1


def test_sort_by_a_column_of_mixed_values(tmp_path, capsys):
    write_run(tmp_path / "a", {**COMPLETED, "receptive_field": [5, 9]})
    write_run(tmp_path / "b", {**COMPLETED, "receptive_field": 16}, {"model": {"width": 2}})
    write_run(tmp_path / "c", {"status": "failed", "error": "boom"}, {"model": {"width": "x"}})
    for column in ("receptive_field", "-model.width", "reason", "n", "status"):
        code, out, _ = compare_cli(capsys, tmp_path, "--sort", column)
        assert code == (2 if column == "n" else 0), column  # no seeds: no n column


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


def test_the_chapter_sweep_reads_at_a_glance(tmp_path, capsys, saved):
    sweep = tmp_path / "chapter"
    overrides = ["experiment=chapter", "data=digits", "trainer.epochs=1", "seeds=2"]
    assert cnnlab_train(sweep, *overrides, multirun=True) == 0
    capsys.readouterr()

    code, out, _ = compare_cli(capsys, sweep)
    assert code == 0
    lines = out.splitlines()
    assert max(map(len, lines)) <= compare.WIDTH
    assert [line.split()[0] for line in lines[2:4]] == ["mlp", "lenet5"]
    assert lines[0].split()[0] == "config" and "model.channels" not in out
    assert lines[-1].startswith("--wide adds: run, ") and lines[-1].endswith("config keys")

    code, out, _ = compare_cli(capsys, sweep, "--wide")
    assert code == 0 and "model.channels" in out and "0_model=mlp" in out
    assert max(map(len, out.splitlines())) > compare.WIDTH  # what the default view saves

    assert compare_cli(capsys, sweep, "--out", tmp_path / "out")[0] == 0
    for name in ("accuracy_vs_params.png", "loss_curves.png"):
        assert png_width(tmp_path / "out" / name) <= 1600
    labels = legend_labels(saved["accuracy_vs_params.png"])
    assert labels == ["mlp (baseline)", "lenet5"]  # the declared baseline: model=mlp
    assert legend_labels(saved["loss_curves.png"]) == labels
    # one epoch: a whole-number tick, not 0.96-1.04
    (axes,) = saved["loss_curves.png"].axes
    low, high = axes.get_xlim()
    assert [t for t in axes.get_xticks() if low <= t <= high] == [1]


def test_a_config_is_named_by_its_model_then_what_differs_among_that_models_runs():
    runs = [
        run("mlp", hidden=[128]),
        *(
            run("lenet5", width=float(w), depth=d, residual=False, channels=[6, 16])
            for w in (1, 2)
            for d in (1, 2)
        ),
    ]
    runs[-1]["config"]["seed"] = 1  # seeds do not name a configuration
    names = compare.config_names(runs, [f"{i}_job" for i in range(len(runs))])
    assert names == [
        "mlp",
        "lenet5 width=1 depth=1",  # 1, not 1.0
        "lenet5 width=1 depth=2",
        "lenet5 width=2 depth=1",
        "lenet5 width=2 depth=2",
    ]


def test_a_chosen_group_names_the_keys_it_sets():
    runs = [
        run("lenet5", {"variant": "baseline"}, kernel_size=5),
        run("lenet5", {"variant": "kernel3"}, kernel_size=3),
        run("lenet5", {"variant": "multiscale"}, branches=[1, 3, 5], padding="same"),
        run("lenet5", {"variant": "kernel3"}, kernel_size=3, residual=True),
        {"metrics": {}, "config": {}, "choices": {}},  # a folder without a config
    ]
    names = compare.config_names(runs, ["a", "b", "c", "d", "4_broken"])
    assert names == [
        "lenet5 baseline",
        "lenet5 kernel3",
        "lenet5 multiscale",
        "lenet5 kernel3 residual=true",  # as an override writes it
        "4_broken",
    ]


def test_long_names_are_wrapped_to_short_legend_lines():
    name = "lenet5 " + " ".join(f"key{i}=value{i}" for i in range(8))
    assert all(len(line) <= plots.LABEL for line in plots.label(name).splitlines())
    assert plots.label(name).replace("\n", " ") == name
