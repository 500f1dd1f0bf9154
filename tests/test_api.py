"""The Python API (cnnlab.api): train() runs what `cnnlab train` runs and returns its Run,
compare_runs() is `cnnlab compare`'s table; bad input raises the shell's one line."""

import contextlib
import io
import logging
import re
import signal
import subprocess
import sys
import threading
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import QUICK, RUN_FILES, cli_env, cnnlab_train, metrics_of

from cnnlab import Run, cli, compare_runs, train
from cnnlab import run as run_module
from cnnlab.outcome import CnnlabError, RunError

# what cnnlab_train adds for the shell
RUN = ["device=cpu", "trainer.progress=false", *QUICK]


def files_in(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def shell_error_line(capfd, *args: str) -> str:
    """`cnnlab train ARGS`'s one error line, without `error: `."""
    capfd.readouterr()
    assert cli.main(["train", *args]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0].removeprefix("error: ")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A run through the API and one through `cnnlab train`, both in their default folders
    under one working folder."""
    cwd = tmp_path_factory.mktemp("cwd")
    with contextlib.chdir(cwd):
        run = train(*RUN, "pictures=true")
        argv = sys.argv
        try:
            assert cli.main(["train", *RUN, "pictures=true"]) == 0
        finally:
            sys.argv = argv
    return cwd, run


def test_train_returns_what_the_run_folder_holds(runs):
    cwd, run = runs
    assert isinstance(run, Run) and run.run_dir.is_absolute() and run.run_dir.is_dir()
    assert run.metrics == metrics_of(run.run_dir)
    assert run.metrics["status"] == "completed" and 0 <= run.metrics["accuracy"] <= 1
    pd.testing.assert_frame_equal(run.history, pd.read_csv(run.run_dir / "history.csv"))
    assert list(run.history["epoch"]) == [1]
    assert "accuracy=" in repr(run) and str(run.run_dir) in repr(run)


def test_train_writes_the_folder_a_shell_run_writes(runs):
    cwd, run = runs
    day = cwd / "outputs" / date.today().isoformat()
    api_run, shell_run = sorted(day.iterdir())  # both named by the same rule
    assert run.run_dir.resolve() == api_run.resolve()
    for folder in (api_run, shell_run):
        assert re.fullmatch(r"\d\d-\d\d-\d\d_lenet5(-\d+)?", folder.name), folder.name
        assert set(RUN_FILES) <= files_in(folder)
    assert files_in(api_run) == files_in(shell_run)
    overrides = [yaml.safe_load((f / ".hydra/overrides.yaml").read_text()) for f in day.iterdir()]
    # the task's overrides, as given: no hydra.run.dir among them
    assert overrides == [[*RUN, "pictures=true"]] * 2
    assert (api_run / "command.txt").read_text() == (shell_run / "command.txt").read_text()


@pytest.mark.parametrize(
    "bad",
    [
        ["model.widht=2"],  # a misspelled key
        ["model=lenet6"],  # a preset that does not exist
        ["trainer.batch_size=0"],  # a value out of range
        ["seeds=0"],
        ["hydra.run.dir=/dev/null/run"],  # a folder under a file
    ],
    ids=["key", "preset", "range", "seeds", "folder"],
)
def test_bad_input_raises_the_line_the_shell_prints(tmp_path, monkeypatch, capfd, bad):
    monkeypatch.chdir(tmp_path)
    line = shell_error_line(capfd, *RUN, *bad)
    with pytest.raises(CnnlabError) as raised:
        train(*RUN, *bad)
    assert str(raised.value) == line and raised.value.exit_code == 2
    assert isinstance(raised.value, RunError)  # what cnnlab raises for a run that cannot be
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_run_that_fails_is_returned_with_its_reason(tmp_path, monkeypatch):
    for key, value in cli_env(tmp_path).items():  # an empty data folder, no network
        monkeypatch.setenv(key, value)
    folder = tmp_path / "data" / "cifar-10-batches-py"  # there, but damaged: found by the load
    folder.mkdir(parents=True)
    for name in ("batches.meta", *(f"data_batch_{i}" for i in range(1, 6)), "test_batch"):
        (folder / name).write_bytes(b"not a pickle")
    run = train(
        "device=cpu", "data=cifar10", "data.download=false", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert run.metrics["status"] == "failed" and "damaged" in run.metrics["error"]
    assert run.metrics == metrics_of(tmp_path / "run") and run.history.empty


@pytest.mark.parametrize("arg", ["model.width=1,2", "seed=range(3)", "-m", "--cfg"])
def test_a_sweep_or_a_hydra_flag_is_refused(tmp_path, monkeypatch, arg):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CnnlabError, match=re.escape(arg)) as raised:
        train(*RUN, arg)
    assert raised.value.exit_code == 2 and list(tmp_path.iterdir()) == []


def test_a_run_folder_given_by_override_is_used(tmp_path):
    folder = tmp_path / "my run's"  # quoted for Hydra, as in the shell
    run = train(*RUN, f"hydra.run.dir='{tmp_path}/my run\\'s'")
    assert run.run_dir == folder and run.metrics == metrics_of(folder)


def test_a_diverged_run_is_returned_with_its_reason(tmp_path):
    folder = tmp_path / "run"
    run = train(*RUN, "model=mlp", "trainer.lr=1e30", "trainer.epochs=2", f"hydra.run.dir={folder}")
    assert run.metrics["status"] == "diverged" and "loss became" in run.metrics["error"]
    assert run.metrics == metrics_of(folder)
    assert cnnlab_train(tmp_path / "shell", *RUN, "model=mlp", "trainer.lr=1e30") == 3


def test_an_interrupted_run_raises_keyboard_interrupt_after_its_files(tmp_path, monkeypatch):
    def describe(*args):
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(run_module, "describe_model", describe)
    with pytest.raises(KeyboardInterrupt, match="SIGINT before training started"):
        train(*RUN, "model=mlp", f"hydra.run.dir={tmp_path / 'run'}")
    assert metrics_of(tmp_path / "run")["status"] == "interrupted"


def test_compare_is_the_shells_table(runs, capsys):
    cwd, run = runs
    for args, sort in [([cwd], None), ([run.run_dir, cwd / "outputs"], "-train_seconds")]:
        capsys.readouterr()
        sorting = ["--sort", sort] if sort else []
        assert cli.main(["compare", *map(str, args), "--format", "csv", *sorting]) == 0
        shell = pd.read_csv(io.StringIO(capsys.readouterr().out))
        table = compare_runs(*args, sort=sort)
        pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(table.to_csv(index=False))), shell)


@pytest.mark.parametrize("args", [["nowhere"], ["."]], ids=["missing", "no-runs"])
def test_compare_raises_the_shells_line(tmp_path, monkeypatch, capsys, args):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("")  # a folder of other files is no run
    assert cli.main(["compare", *args]) == 2
    line = capsys.readouterr().err.strip().removeprefix("error: ")
    with pytest.raises(CnnlabError) as raised:
        compare_runs(*args)
    assert (str(raised.value), raised.value.exit_code) == (line, 2)


def test_importing_the_api_loads_neither_torch_nor_pandas():
    code = "import sys, cnnlab.api; print(sorted({'torch', 'pandas', 'hydra'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


# ---- issue 28: arguments, logging, twice in a row, from a thread ----------------------------


@pytest.mark.parametrize(
    "bad, words",
    [((5,), "train(5)"), ((None,), "train(None)"), ((["data=digits"],), "unpack a list")],
    ids=["int", "None", "list"],
)
def test_overrides_that_are_not_strings_raise_cnnlab_error(tmp_path, monkeypatch, bad, words):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CnnlabError, match=re.escape(words)) as raised:
        train(*bad)
    assert raised.value.exit_code == 2 and "overrides are strings" in str(raised.value)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def callers_logging():
    """The root logger as a caller set it up: a handler of its own at level WARNING."""
    root = logging.getLogger()
    mine = logging.StreamHandler(io.StringIO())
    level = root.level
    root.addHandler(mine)
    root.setLevel(logging.WARNING)
    yield mine
    root.removeHandler(mine)
    root.setLevel(level)


def test_train_leaves_the_root_logger_as_it_found_it(tmp_path, callers_logging):
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    run = train(*RUN, f"hydra.run.dir={tmp_path / 'run'}")
    assert (list(root.handlers), root.level) == before
    with pytest.raises(CnnlabError):  # bad input: the same
        train(*RUN, "seed=-1")
    assert (list(root.handlers), root.level) == before
    failed = train(*RUN, "trainer.lr=1e30", "model=mlp", f"hydra.run.dir={tmp_path / 'div'}")
    assert failed.metrics["status"] == "diverged"
    assert (list(root.handlers), root.level) == before
    logging.getLogger("callers.own").warning("a line of the caller's")
    assert "a line of the caller's" not in (run.run_dir / "train.log").read_text()
    assert "a line of the caller's" in callers_logging.stream.getvalue()


def test_train_twice_in_a_row_and_from_a_thread(tmp_path):
    """As a notebook calls it: twice, the same run twice (timings aside), and from a worker
    thread, where no signal handler can be set."""
    first = train(*RUN, f"hydra.run.dir={tmp_path / 'a'}")
    second = train(*RUN, f"hydra.run.dir={tmp_path / 'b'}")
    got = {}
    worker = threading.Thread(
        target=lambda: got.update(run=train(*RUN, f"hydra.run.dir={tmp_path / 'c'}"))
    )
    worker.start()
    worker.join(300)
    runs = [first, second, got.get("run")]
    assert all(r is not None and r.metrics["status"] == "completed" for r in runs), got
    for r in runs[1:]:
        assert r.metrics["accuracy"] == first.metrics["accuracy"]
        assert r.history.drop(columns="seconds").equals(first.history.drop(columns="seconds"))


@pytest.mark.parametrize(
    "split",
    [["data.val_fraction=0.0001"], ["data.train_size=10", "data.val_fraction=0.5"]],
    ids=["nothing held out", "classes left out"],
)
def test_a_split_that_cannot_train_raises_and_writes_nothing(tmp_path, monkeypatch, split):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "data"))
    with pytest.raises(CnnlabError, match="data.val_fraction=") as raised:
        train("data=digits", "device=cpu", *split)
    assert raised.value.exit_code == 2
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # the digits cache, no run
