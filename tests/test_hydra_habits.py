"""Issue 13: what a Hydra user's hands expect. Shell completion through Hydra's own script,
`cnnlab rerun RUN [overrides]` with the command that reproduces a run in command.txt, and
`logger=mlflow` (skipped without mlflow)."""

import csv
import json
import logging
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CNNLAB, QUICK, cli_env

from cnnlab import cli, hydra_app, loggers, shell
from cnnlab.config import MLflowLoggerConfig, TrainConfig

TINY = ["model=mlp", *QUICK, "trainer.progress=false", "device=cpu"]  # for a cnnlab process


def read_history(run: Path) -> list[dict]:
    with open(run / "history.csv") as f:
        return list(csv.DictReader(f))


def learned(run: Path) -> list[tuple]:
    """What training produced, per epoch, without the wall time."""
    return [(r["train_loss"], r["test_loss"], r["test_accuracy"]) for r in read_history(run)]


# ---- shell completion --------------------------------------------------------------------


def test_bash_completion_through_hydras_script(tmp_path):
    """Hydra's documented install line, then a completion as bash calls it: the function
    the script registers reads COMP_LINE and friends and fills COMPREPLY."""
    script = """
        eval "$(cnnlab train --shell-completion install=bash)"
        complete -p train 2>/dev/null && echo "train registered as a command"
        complete -p cnnlab
        complete_line() {
            COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}; COMP_WORDS=($COMP_LINE)
            COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
            COMPREPLY=(); hydra_bash_completion; echo "reply: ${COMPREPLY[*]}"
        }
        complete_line "cnnlab train model=le"
    """
    env = cli_env(tmp_path) | {"PATH": f"{CNNLAB.parent}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, text=True, capture_output=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert "train registered as a command" not in lines
    assert lines[0].endswith("hydra_bash_completion cnnlab")
    (reply,) = [line.split()[1:] for line in lines if line.startswith("reply:")]
    assert "model=lenet5" in reply and all(word.startswith("model=le") for word in reply)


@pytest.mark.parametrize("shell, separator", [("bash", " "), ("zsh", " "), ("fish", "\n")])
def test_the_command_word_completes_to_command_names(shell, separator, monkeypatch, capsys):
    monkeypatch.setenv("COMP_LINE", "cnnlab ")
    monkeypatch.setenv("COMP_POINT", "7")
    assert cli.main(["-sc", f"query={shell}"]) == 0
    names = capsys.readouterr().out.rstrip("\n").split(separator)
    assert {"train", "rerun", "compare"} <= set(names) and all(n.isidentifier() for n in names)


# an interactive zsh driven through a pseudo-terminal: type the line and TAB, read the screen
ZSH_TAB = r"""
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z 'PS1="> "; autoload -U compinit && compinit -u; autoload -U bashcompinit &&
  bashcompinit; eval "$(cnnlab train --shell-completion install=bash)"; echo READY'
wait_for() {
  local out="" chunk
  for i in {1..240}; do
    zpty -r -t z chunk && out+=$chunk
    [[ $out == *$1* ]] && { print -r -- $out; return 0 }
    sleep 0.5
  done
  print -r -- $out; return 1
}
wait_for READY >/dev/null && zpty -w -n z $'cnnlab train model=le\t' && wait_for model=lenet5
"""


@pytest.mark.slow
def test_zsh_completion_through_bashcompinit(tmp_path):
    """zsh runs Hydra's bash script through bashcompinit, as Hydra's documentation says."""
    if not shutil.which("zsh"):
        pytest.skip("no zsh")
    env = cli_env(tmp_path) | {"PATH": f"{CNNLAB.parent}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run(
        ["zsh", "-f", "-c", ZSH_TAB],
        cwd=tmp_path,
        env=env,
        text=True,
        capture_output=True,
        timeout=300,
    )
    assert r.returncode == 0 and "cnnlab train model=lenet5" in r.stdout, r.stdout[-2000:]


@pytest.mark.parametrize(
    "line, names, for_hydra",
    [
        ("cnnlab ", ["train", "rerun", "compare"], None),
        ("cnnlab re", ["rerun"], None),
        ("cnnlab train model=le", [], ("cnnlab model=le", 15)),
        ("cnnlab  train   model=le", [], ("cnnlab  model=le", 16)),
        ("cnnlab train ", [], ("cnnlab ", 7)),
        ("cnnlab rerun outputs/x", [], None),  # the folder: the shell completes file names
        ("cnnlab rerun outputs/x trainer.ep", [], ("cnnlab trainer.ep", 17)),
        ("cnnlab compare outputs", [], None),
    ],
)
def test_completion_target_takes_the_command_out_of_the_line(line, names, for_hydra):
    commands = ["train", "rerun", "compare"]
    assert shell.completion_target(line, len(line), commands) == (names, for_hydra)


def test_completion_with_a_shell_hydra_lacks_is_one_error_line(capsys):
    assert cli.main(["-sc", "query=tcsh"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bash, fish, zsh" in err


# ---- rerun and command.txt ---------------------------------------------------------------


def test_merge_overrides_new_ones_win_by_key():
    old = ["model=mlp", "trainer.epochs=1", "+model.extra=1", "seed=3"]
    new = ["trainer.epochs=2", "model.extra=5", "--cfg", "job"]
    assert hydra_app.merge_overrides(old, new) == [
        "model=mlp",
        "seed=3",
        "trainer.epochs=2",
        "model.extra=5",
        "--cfg",
        "job",
    ]


def test_reproduce_command_quotes_for_the_shell():
    overrides = ["model.channels=[8,16]", "hydra.job.name=a b", "data=digits"]
    command = hydra_app.reproduce_command(overrides)
    assert shlex.split(command) == ["cnnlab", "train", *overrides]


def test_rerun_of_a_folder_without_overrides_is_one_error_line(tmp_path, capsys):
    assert cli.main(["rerun", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / ".hydra" / "overrides.yaml") in err


@pytest.fixture(scope="module")
def original_run(tmp_path_factory, run_cli):
    cwd = tmp_path_factory.mktemp("rerun")
    run = cwd / "outputs" / "original"
    r = run_cli(cwd, "train", *TINY, "seed=3", f"hydra.run.dir={run}")
    assert r.returncode == 0, r.stderr[-2000:]
    return cwd, run


def new_run_folder(cwd: Path, original: Path) -> Path:
    (folder,) = [p.parent for p in (cwd / "outputs").rglob("metrics.json") if p.parent != original]
    return folder


def test_command_txt_reproduces_the_run(original_run):
    cwd, run = original_run
    overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    assert (run / "command.txt").read_text() == hydra_app.reproduce_command(overrides) + "\n"


def test_rerun_repeats_the_run_in_a_new_folder(tmp_path, original_run, run_cli):
    cwd, run = original_run
    rerun_cwd = tmp_path  # a folder of its own, so the original's outputs/ stays as it was
    r = run_cli(rerun_cwd, "rerun", run)
    assert r.returncode == 0, r.stderr[-2000:]
    again = new_run_folder(rerun_cwd, run)
    metrics = [json.loads((f / "metrics.json").read_text()) for f in (run, again)]
    assert metrics[1]["seed"] == metrics[0]["seed"] == 3
    assert metrics[1]["accuracy"] == metrics[0]["accuracy"]
    assert learned(again) == learned(run)
    assert (again / "command.txt").read_text() == (run / "command.txt").read_text()


@pytest.mark.slow
def test_rerun_with_an_override_trains_that_way(tmp_path, original_run, run_cli):
    cwd, run = original_run
    r = run_cli(tmp_path, "rerun", run, "trainer.epochs=2")
    assert r.returncode == 0, r.stderr[-2000:]
    again = new_run_folder(tmp_path, run)
    assert json.loads((again / "metrics.json").read_text())["epochs_completed"] == 2
    assert learned(again)[0] == learned(run)[0]  # same seed: the first epoch repeats
    overrides = yaml.safe_load((again / ".hydra" / "overrides.yaml").read_text())
    assert "trainer.epochs=2" in overrides and "trainer.epochs=1" not in overrides


# ---- trackers ----------------------------------------------------------------------------


class Broken(loggers.RunLogger):
    def __init__(self):
        self.calls = []

    def __call__(self, row):
        self.calls.append("row")
        raise OSError("disk full")

    def close(self):
        self.calls.append("close")


def test_a_failing_tracker_warns_once_and_never_raises(caplog):
    broken = Broken()
    tracker = loggers.Guarded("broken", broken)
    with caplog.at_level(logging.WARNING, logger="cnnlab"):
        tracker({"epoch": 1})
        tracker({"epoch": 2})
        tracker.final({"status": "completed"}, Path("."))
        tracker.close()
    assert broken.calls == ["row", "close"]  # dropped after the failure; close still tried
    assert [r.getMessage() for r in caplog.records] == [
        "warning: logger=broken stopped logging: OSError: disk full"
    ]


def test_a_missing_tracker_package_warns_naming_the_extra(tmp_path, caplog, monkeypatch):
    # import mlflow (and any of its modules an earlier test loaded) now raises ImportError
    for name in ["mlflow", *(m for m in sys.modules if m.startswith("mlflow."))]:
        monkeypatch.setitem(sys.modules, name, None)
    with caplog.at_level(logging.WARNING, logger="cnnlab"):
        tracker = loggers.open_logger(TrainConfig(logger=MLflowLoggerConfig()), tmp_path)
    assert type(tracker) is loggers.RunLogger
    assert "logger=mlflow is off for this run" in caplog.text and "cnnlab[mlflow]" in caplog.text


def test_a_tracker_that_cannot_start_leaves_the_run_untracked(tmp_path, caplog):
    pytest.importorskip("mlflow")
    cfg = TrainConfig(logger=MLflowLoggerConfig(tracking_uri="nosuchscheme://x"))
    with caplog.at_level(logging.WARNING, logger="cnnlab"):
        tracker = loggers.open_logger(cfg, tmp_path)
    assert type(tracker) is loggers.RunLogger
    assert "logger=mlflow is off for this run" in caplog.text


def mlflow_db(path: Path, query: str) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute(query).fetchall()


def test_mlflow_logs_params_metrics_and_artifacts(tmp_path, run_cli):
    pytest.importorskip("mlflow")
    db, run = tmp_path / "tracking" / "mlflow.db", tmp_path / "run"
    r = run_cli(
        tmp_path,
        "train",
        *TINY,
        "trainer.epochs=2",
        "model.width=2",
        "logger=mlflow",
        f"logger.tracking_uri=sqlite:///{db}",
        f"hydra.run.dir={run}",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((run / "metrics.json").read_text())
    ((status, artifacts),) = mlflow_db(db, "select status, artifact_uri from runs")
    assert status == "FINISHED"
    params = dict(mlflow_db(db, "select key, value from params"))
    assert params["model.width"] == "2.0" and params["data.name"] == "synthetic"
    final = mlflow_db(db, "select value from metrics where key = 'accuracy'")
    assert final == [(metrics["accuracy"],)]
    per_epoch = mlflow_db(db, "select step, value from metrics where key = 'train_loss'")
    history = read_history(run)
    assert sorted(per_epoch) == [(int(h["epoch"]), float(h["train_loss"])) for h in history]
    files = Path(artifacts.removeprefix("file://"))
    assert (files / "metrics.json").read_text() == (run / "metrics.json").read_text()
    assert (files / ".hydra" / "overrides.yaml").is_file()


@pytest.mark.slow
def test_mlflow_sweep_is_one_experiment_tagged_with_its_folder(tmp_path, run_cli):
    pytest.importorskip("mlflow")
    db, sweep = tmp_path / "mlflow.db", tmp_path / "sweep"
    r = run_cli(
        tmp_path,
        "train",
        "-m",
        *TINY,
        "model.width=1,2",
        "logger=mlflow",
        f"logger.tracking_uri=sqlite:///{db}",
        f"hydra.sweep.dir={sweep}",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    runs = mlflow_db(db, "select experiment_id, status from runs")
    assert len(runs) == 2 and len({e for e, _ in runs}) == 1
    assert {s for _, s in runs} == {"FINISHED"}
    (name,) = mlflow_db(db, f"select name from experiments where experiment_id = {runs[0][0]}")
    # named as the user names the folder, from where cnnlab runs (loggers.sweep_name)
    assert name == ("sweep",)
    tags = mlflow_db(db, "select value from tags where key = 'cnnlab.sweep_dir'")
    assert tags == [(str(sweep.resolve()),)] * 2


# ---- a fast exit -------------------------------------------------------------------------

EXIT_NOW = """
import atexit, sys, threading, time
from pathlib import Path
from cnnlab.cli import exit_now
out = Path(sys.argv[1])
atexit.register(lambda: print("atexit ran"))
print("x" * 100_000)  # more than a pipe's buffer, unflushed: stdout is a pipe here
if sys.argv[2] == "thread":
    threading.Thread(target=lambda: (time.sleep(0.5), out.write_text("joined"))).start()
exit_now(eval(sys.argv[3]))
"""


@pytest.mark.parametrize(
    "thread, code, returncode, stderr",
    [("none", "3", 3, ""), ("none", "None", 0, ""), ("none", "'why'", 1, "why\n"),
     ("thread", "0", 0, "")],
)  # fmt: skip
def test_exit_now_writes_everything_and_keeps_the_code(tmp_path, thread, code, returncode, stderr):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    out = tmp_path / "thread.txt"
    r = subprocess.run(
        [sys.executable, "-c", EXIT_NOW, str(out), thread, code],
        capture_output=True,
        text=True,
        env=env,
    )
    assert (r.returncode, r.stderr) == (returncode, stderr)
    assert r.stdout == "x" * 100_000 + "\natexit ran\n"  # flushed, handlers run, in order
    assert out.exists() == (thread == "thread")  # a running thread is waited for


def test_the_console_script_flushes_a_piped_stdout_and_the_log(tmp_path):
    env = {k: v for k, v in cli_env(tmp_path).items() if k != "PYTHONUNBUFFERED"}
    r = subprocess.run(
        [str(CNNLAB), "inspect", "model=lenet5", "--format", "json"],
        cwd=tmp_path, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["params"] == 44_426
    run = tmp_path / "run"
    r = subprocess.run(
        [str(CNNLAB), "train", *TINY, f"hydra.run.dir={run}"],
        cwd=tmp_path, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "accuracy" in (run / "train.log").read_text().splitlines()[-1]
