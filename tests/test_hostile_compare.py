"""Issue 19: `cnnlab compare` over folders and arguments nobody meant to give it. Each case
ends in one `error:` line (bad argument: exit 2) or a row with its reason (exit 0); never
a traceback, never a hang, and each run counted once."""

import json
import os
import subprocess

import pytest
import yaml
from conftest import CNNLAB, cli_env

from cnnlab import cli

COMPLETED = {"status": "completed", "model": "lenet5", "params": 44426, "accuracy": 0.9}


def compare_cli(capsys, *args):
    """`cnnlab compare ARGS` in this process: (exit code, stdout, stderr)."""
    code = cli.main(["compare", *map(str, args)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


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


# ---------------------------------------------------------------- metrics.json content

DEEP = "[" * 100_000 + "]" * 100_000


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


# ---------------------------------------------------------------- the other files of a run


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


# ---------------------------------------------------------------- folders and links


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


# ---------------------------------------------------------------- arguments


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
