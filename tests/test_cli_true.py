"""The command line does what it says (issue 18): a preset that is a sweep runs as one, a
sweep value where one run is meant is one error line, a closed stdout ends quietly, the
help lists only real config groups, MLflow names a sweep's experiment as the user does."""

import json
import subprocess
from pathlib import Path

import pytest
from conftest import CNNLAB, SMALL, cli_env

from cnnlab import cli

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [*SMALL, "seeds=1", "trainer.epochs=1", "pictures=false", "device=cpu"]


def main(monkeypatch, cwd: Path, *args) -> int:
    monkeypatch.chdir(cwd)
    try:
        return cli.main(list(args))
    except SystemExit as e:
        return e.code


def one_error_line(capfd) -> str:
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_a_preset_that_sweeps_runs_every_job_without_m(tmp_path, monkeypatch, capfd):
    sweep = tmp_path / "sweep"
    code = main(
        monkeypatch,
        tmp_path,
        "train",
        "experiment=activations",
        *TINY,
        "trainer.progress=false",
        f"hydra.sweep.dir={sweep}",
    )
    assert code == 0, capfd.readouterr().err
    jobs = sorted(p.name for p in sweep.iterdir() if (p / "metrics.json").is_file())
    assert len(jobs) == 3, jobs  # relu, leaky_relu, gelu
    activations = {json.loads((sweep / j / "metrics.json").read_text())["status"] for j in jobs}
    assert activations == {"completed"}


def test_a_preset_sweep_is_checked_job_by_job_before_anything_runs(tmp_path, monkeypatch, capfd):
    """Only the group-norm job of experiment=normalization is bad (5 groups cannot divide
    6 channels): the whole sweep is refused before a folder exists, without -m too."""
    sweep = tmp_path / "sweep"
    code = main(
        monkeypatch,
        tmp_path,
        "train",
        "experiment=normalization",
        *TINY,
        "model.groups=5",
        f"hydra.sweep.dir={sweep}",
    )
    assert code == 2
    assert "model.groups=5" in one_error_line(capfd)
    assert not sweep.exists()


@pytest.mark.parametrize("command", ["train", "inspect"])
def test_a_sweep_value_where_one_run_is_meant(command, tmp_path, monkeypatch, capfd):
    code = main(monkeypatch, tmp_path, command, "model.width=1,2", "device=cpu")
    assert code == 2
    line = one_error_line(capfd)
    assert "model.width=1,2" in line and "-m" in line
    assert list(tmp_path.iterdir()) == []


def test_inspect_of_a_preset_that_sweeps_names_its_values(tmp_path, monkeypatch, capfd):
    assert main(monkeypatch, tmp_path, "inspect", "experiment=width_depth") == 2
    line = one_error_line(capfd)
    assert "model.width=1,2" in line and "model.depth=1,2" in line
    # with every swept key set, it is one model again
    assert (
        main(
            monkeypatch,
            tmp_path,
            "inspect",
            "experiment=width_depth",
            "model.width=2",
            "model.depth=2",
        )
        == 0
    )


def test_rerun_with_a_sweep_value_is_refused(tmp_path, monkeypatch, capfd):
    run = tmp_path / "old"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- data=synthetic\n")
    code = main(monkeypatch, tmp_path, "rerun", str(run), "model.width=1,2")
    capfd_out = capfd.readouterr()
    assert code == 2
    errors = capfd_out.err.splitlines()
    assert len(errors) == 1 and "model.width=1,2" in errors[0] and "-m" in errors[0]


def test_rerun_of_a_preset_job_is_one_run(tmp_path, monkeypatch, capfd):
    """A job of experiment=activations fixes the swept key: its rerun is a run, not a sweep."""
    run = tmp_path / "old"
    (run / ".hydra").mkdir(parents=True)
    overrides = ["experiment=activations", "model.activation=gelu", *TINY]
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    new = tmp_path / "new"
    code = main(
        monkeypatch,
        tmp_path,
        "rerun",
        str(run),
        "trainer.progress=false",
        f"hydra.run.dir={new}",
    )
    assert code == 0, capfd.readouterr().err
    assert json.loads((new / "metrics.json").read_text())["status"] == "completed"


def test_device_names_apart_from_devices_that_are_absent(tmp_path, monkeypatch, capfd):
    assert main(monkeypatch, tmp_path, "inspect", "device=gpu") == 2
    line = one_error_line(capfd)
    assert "auto, cpu, cuda, cuda:N" in line and "mps" in line
    assert main(monkeypatch, tmp_path, "inspect", "device=cuda:99") == 2
    assert "not available on this machine" in one_error_line(capfd)


def test_mlflow_names_a_sweep_experiment_from_the_working_folder(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from cnnlab import loggers
    from cnnlab.config import MLflowLoggerConfig

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sweep = tmp_path / "outputs" / "sweeps" / "day" / "time"
    (sweep / "0_job").mkdir(parents=True)
    tracker = loggers.MLflowLogger(MLflowLoggerConfig(tracking_uri=uri), sweep / "0_job", {}, sweep)
    tracker.close()
    client = MlflowClient(tracking_uri=uri)
    assert client.get_experiment_by_name("outputs/sweeps/day/time") is not None
    assert client.get_experiment_by_name(str(sweep)) is None


# ---- the console script ------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [["inspect", "--format", "json"], ["--help"]], ids=["inspect", "help"]
)
def test_a_closed_stdout_ends_quietly(args, tmp_path):
    """`cnnlab inspect | head -0`: the reader is gone before cnnlab writes."""
    proc = subprocess.Popen(
        [str(CNNLAB), *args],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    proc.stdout.close()  # the reader goes away at once
    try:
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=120)
    finally:
        proc.kill()
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert code == 141  # 128 + SIGPIPE, as a shell reports a tool that SIGPIPE ended


def test_train_help_lists_no_schema_group(tmp_path, run_cli):
    result = run_cli(tmp_path, "train", "--help", timeout=120)
    assert result.returncode == 0, result.stderr
    groups = result.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    assert "model: lenet5" in groups
    assert "schema" not in groups, groups
