"""One run end to end (cnnlab.run): one metrics.json schema whatever the run's status, and
metrics.json written once per run."""

import errno
import os
import signal
from pathlib import Path

import pytest
from conftest import QUICK, cnnlab_train, metrics_of

from cnnlab import data, files, measures, pictures, report, run
from cnnlab.config import MLPConfig, SyntheticDataConfig, TrainConfig
from cnnlab.outcome import ConfigError, Outcome, Status

pytestmark = pytest.mark.usefixtures("one_thread")

MLP = ["model=mlp", *QUICK]
# metrics.json's keys, in order: the record of a run that got to nothing
KEYS = list(report.metrics_record(report.Results("mlp", "digits", 0, []), Outcome(Status.failed)))


def refused(*args):
    raise data.DataError("data.path=/nowhere: no such folder", status=Status.bad_input)


def not_to_be_had(*args):
    raise data.DataError("/data/MNIST/raw: the four files are missing")


def sigint(*args):
    signal.raise_signal(signal.SIGINT)


def check_refuses():
    raise ConfigError("model.groups=3: does not divide 6 channels")


# status -> (exit code, what to patch, extra overrides)
ENDINGS = {
    "completed": (0, None, []),
    "diverged": (3, None, ["trainer.lr=1e30"]),
    "failed": (1, (data, "load", not_to_be_had), []),
    "bad_input": (2, (data, "load", refused), []),
    "interrupted": (130, (run, "describe_model", sigint), []),
    "interrupted after training": (130, (pictures, "plot_filters", sigint), ["pictures=true"]),
}


@pytest.fixture(scope="module")
def ended(tmp_path_factory) -> dict[str, tuple[int, dict]]:
    """A run ended each way: name -> (exit code, metrics.json)."""
    root, out = tmp_path_factory.mktemp("endings"), {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name, (_, patch, extra) in ENDINGS.items():
            if patch:
                monkeypatch.setattr(*patch)
            out[name] = (cnnlab_train(root / name, *MLP, *extra), metrics_of(root / name))
            monkeypatch.undo()
    return out


@pytest.mark.parametrize("name", list(ENDINGS)[1:])
def test_every_ending_writes_the_same_keys_as_a_completed_run(ended, name):
    code, metrics = ended[name]
    assert code == ENDINGS[name][0]
    assert metrics["status"] == name.split()[0]
    assert list(metrics) == list(ended["completed"][1]) == KEYS
    assert metrics["error"] and ended["completed"][1]["error"] is None


def test_a_completed_record_has_every_figure(ended):
    completed = ended["completed"][1]
    unknown = {k for k, v in completed.items() if v is None}
    # one seed, no validation split, CPU, no resume, no error: nothing else is missing
    assert unknown == {"accuracy_std", "f1_macro_std", "val_accuracy", "best_epoch"} | {
        "validation",
        "resumed_from",
        "peak_gpu_mb",
        "mps_allocated_mb",
        "error",
    }
    assert set(measures.MEASUREMENTS) <= set(completed["per_seed"][0])


def test_a_failed_record_keeps_what_the_run_got_to(ended):
    completed, failed = ended["completed"][1], ended["failed"][1]
    assert failed["model"] == completed["model"] == "mlp" and failed["seed"] == 0
    assert failed["accuracy"] is None and failed["epochs_completed"] is None
    diverged = ended["diverged"][1]
    assert diverged["params"] == completed["params"] and diverged["epochs_completed"] == 0


JOB = TrainConfig(model=MLPConfig(), data=SyntheticDataConfig())


def test_a_job_whose_check_refuses_it_records_bad_input_with_the_same_keys(tmp_path):
    """A job checked in its own process (a joblib worker, an Optuna trial) that fails the
    check: the folder Hydra made for it gets the same record as any run."""
    metrics, outcome = run.run_job(JOB, check_refuses, tmp_path)
    assert outcome.status == Status.bad_input and outcome.exit_code == 2
    assert metrics_of(tmp_path) == metrics and list(metrics) == KEYS
    assert metrics["error"] == "model.groups=3: does not divide 6 channels"


def count_writes(monkeypatch) -> list[Path]:
    """Every metrics.json that files.write_atomic is asked to replace, in order."""
    real, writes = files.write_atomic, []

    def write_atomic(path, text):
        if Path(path).name == "metrics.json":
            writes.append(Path(path))
        real(path, text)

    monkeypatch.setattr(files, "write_atomic", write_atomic)
    return writes


@pytest.mark.parametrize("name", ["completed", "diverged", "failed", "interrupted after training"])
def test_metrics_json_is_replaced_once_per_run(tmp_path, monkeypatch, name):
    code, patch, extra = ENDINGS[name]
    if patch:
        monkeypatch.setattr(*patch)
    writes = count_writes(monkeypatch)
    assert cnnlab_train(tmp_path / "run", *MLP, *extra) == code
    assert writes == [tmp_path / "run" / "metrics.json"]


def test_a_metrics_json_that_cannot_be_written_is_tried_once(tmp_path, monkeypatch, capfd):
    writes, real = count_writes(monkeypatch), files.write_atomic

    def full(path, text):
        real(path, text)  # the counter
        if Path(path).name == "metrics.json":
            raise files.WriteError(path, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files, "write_atomic", full)
    assert cnnlab_train(tmp_path / "run", *MLP) == 1
    assert writes == [tmp_path / "run" / "metrics.json"]
    err = capfd.readouterr().err.strip().splitlines()
    path = tmp_path / "run" / "metrics.json"
    assert err == [f"error: could not write {path}: No space left on device"]
