"""One run end to end (cnnlab.run): one metrics.json schema whatever the run's status, and
metrics.json written once per run.

Runs under hostile conditions (issue 19): a disk that fills while a checkpoint, history.csv
or metrics.json is written, a run folder that cannot be made, exceptions and signals at
every stage of a run. Whatever happens, no temporary file stays, nothing written before is
lost, and metrics.json's status agrees with the exit code; no traceback reaches stderr.

Signals in this process are SIGINT (without cnnlab's handler it would be a
KeyboardInterrupt, not a killed test session); SIGTERM is sent to real subprocesses."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from conftest import (
    MLP,
    SMALL,
    cli_env,
    cnnlab_train,
    metrics_of,
    one_error_line,
)

from cnnlab import data, files, measures, pictures, report, run
from cnnlab import run as run_module
from cnnlab.checkpoints import load_checkpoint
from cnnlab.config import MLPConfig, SyntheticDataConfig, TrainConfig
from cnnlab.outcome import ConfigError, Outcome, Status

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def leftovers(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.tmp"))


def full_disk_for(name: str, after: int = 0):
    """files.atomic_file that writes part of `name` and then finds the disk full, from
    its (after+1)-th write on; every other file is written as usual."""
    real, seen = files.atomic_file, []

    @contextlib.contextmanager
    def atomic_file(path):
        if Path(path).name == name:
            seen.append(path)
            if len(seen) > after:
                with real(path) as f:
                    f.write(b"half a fi")
                    raise ENOSPC
        with real(path) as f:
            yield f

    return atomic_file


# `cnnlab train` with one stage made slow (3 s, after printing "AT <stage>"), so that a
# signal sent on that line arrives during it
DRIVER = """
import sys, time
from cnnlab import cli, data, pictures, run
stage = sys.argv[1]
module, name = {"data": (data, "load"), "model": (run, "start_run"),
                "pictures": (pictures, "plot_filters")}[stage]
real = getattr(module, name)
def slow(*args, **kwargs):
    print("AT", stage, flush=True)
    for _ in range(60):
        time.sleep(0.05)
    return real(*args, **kwargs)
setattr(module, name, slow)
sys.argv = ["cnnlab", "train", *sys.argv[2:]]
cli.entry()
"""


MOMENTS = {
    "data": signal.SIGTERM,  # it used to kill the process: exit 143 and no metrics.json
    "model": signal.SIGTERM,
    "pictures": signal.SIGINT,  # after training: the results are kept
}


@pytest.fixture(scope="module")
def signalled(tmp_path_factory):
    """Each moment's process, started together, signalled on its AT line: stage ->
    (return code, stderr, run folder)."""
    root = tmp_path_factory.mktemp("signals")
    procs, out = {}, {}
    for stage in MOMENTS:
        args = ["device=cpu", "trainer.progress=false", "model=lenet5", *SMALL]
        args += ["trainer.epochs=1", f"hydra.run.dir={root / stage}"]
        procs[stage] = subprocess.Popen(
            [sys.executable, "-c", DRIVER, stage, *args],
            cwd=root,
            env=cli_env(root),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def watch(stage):
        proc = procs[stage]
        for line in proc.stdout:
            if line.startswith(f"AT {stage}"):
                proc.send_signal(MOMENTS[stage])
                break
        proc.stdout.read()  # the rest, so that the process never blocks on its pipe

    threads = [threading.Thread(target=watch, args=(stage,)) for stage in MOMENTS]
    for thread in threads:
        thread.start()
    for stage, proc in procs.items():
        try:
            proc.wait(timeout=180)
        finally:
            proc.kill()
        out[stage] = (proc.returncode, proc.stderr.read(), root / stage)
    for thread in threads:
        thread.join(timeout=10)
    return out


def test_atomic_write_that_fails_mid_file_keeps_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "metrics.json"
    files.write_atomic(target, "old\n")
    for error in (RuntimeError("writer broke"), KeyboardInterrupt()):
        with pytest.raises(type(error)), files.atomic_file(target) as f:
            f.write(b"new, half")
            raise error
        assert target.read_text() == "old\n" and leftovers(tmp_path) == []


def test_checkpoint_writer_error_mid_file_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    real_save, calls = torch.save, []

    def save(obj, f, *args, **kwargs):  # the 2nd checkpoint: half written, then the zip
        calls.append(1)  # writer's error on a full disk
        if len(calls) == 2:
            f.write(b"PK\x03\x04 half a checkpoint")
            raise RuntimeError("[enforce fail] PytorchStreamWriter failed writing file data/0")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    run = tmp_path / "run"
    assert cnnlab_train(run, *MLP, "trainer.epochs=2") == 1
    m = metrics_of(run)
    assert m["status"] == "failed" and "PytorchStreamWriter failed" in m["error"]
    assert "could not write checkpoint" in m["error"]
    assert leftovers(run) == []
    assert load_checkpoint(run)["epoch"] == 1


def test_full_disk_on_history_mid_run_fails_the_run_naming_the_file(tmp_path, monkeypatch):
    # the first write is the header, as training starts; the third is epoch 2's
    monkeypatch.setattr(files, "atomic_file", full_disk_for("history.csv", after=2))
    run = tmp_path / "run"
    assert cnnlab_train(run, *MLP, "trainer.epochs=3") == 1
    m = metrics_of(run)
    assert m["status"] == "failed"
    assert f"could not write {run / 'history.csv'}: No space left on device" in m["error"]
    assert (run / "history.csv").read_text().count("\n") == 2  # header and epoch 1
    assert load_checkpoint(run)["epoch"] == 2 and leftovers(run) == []


def test_full_disk_for_metrics_json_is_one_error_line(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(files, "atomic_file", full_disk_for("metrics.json"))
    run = tmp_path / "run"
    assert cnnlab_train(run, *MLP) == 1
    line = one_error_line(capfd)
    assert f"could not write {run / 'metrics.json'}: No space left on device" in line
    assert not (run / "metrics.json").exists() and leftovers(run) == []


def test_every_write_failing_is_one_error_line_and_no_traceback(tmp_path, monkeypatch, capfd):
    def write_atomic(path, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files, "write_atomic", write_atomic)
    run = tmp_path / "run"
    assert cnnlab_train(run, *MLP) == 1
    assert str(run / "metrics.json") in one_error_line(capfd)


@pytest.mark.parametrize("multirun", [False, True], ids=["run", "sweep"])
def test_a_folder_under_a_file_is_one_error_line(tmp_path, capfd, multirun):
    (tmp_path / "a_file").write_text("")
    folder = tmp_path / "a_file" / "run"
    extra = ["seed=0,1"] if multirun else []
    assert cnnlab_train(folder, *MLP, *extra, multirun=multirun) == 2
    line = one_error_line(capfd)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    assert line.startswith(f"error: {key}={folder}: {tmp_path / 'a_file'} is a file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_an_exception_in_describe_model_fails_the_run_with_its_reason(tmp_path, monkeypatch, capfd):
    def describe(*args):
        raise ValueError("no table for this model")

    monkeypatch.setattr(run_module, "describe_model", describe)
    run = tmp_path / "run"
    assert cnnlab_train(run, *MLP) == 1
    assert "Traceback" not in capfd.readouterr().err
    m = metrics_of(run)
    assert m["status"] == "failed" and m["error"] == "ValueError: no table for this model"
    assert "Traceback" in (run / "train.log").read_text()  # kept where it helps


def test_sigint_while_building_the_model_is_an_interrupted_run(tmp_path, monkeypatch):
    def describe(*args):
        signal.raise_signal(signal.SIGINT)
        raise AssertionError("the signal did not stop the run")

    monkeypatch.setattr(run_module, "describe_model", describe)
    run = tmp_path / "run"
    assert cnnlab_train(run, *MLP) == 130
    m = metrics_of(run)
    assert m["status"] == "interrupted" and m["error"] == "SIGINT before training started"


def test_sigint_while_the_files_are_drawn_is_recorded(tmp_path, monkeypatch):
    real = pictures.plot_mistakes  # the last file drawn before metrics.json

    def plot_mistakes(*args):
        signal.raise_signal(signal.SIGINT)
        return real(*args)

    monkeypatch.setattr(pictures, "plot_mistakes", plot_mistakes)
    run = tmp_path / "run"
    assert cnnlab_train(run, *MLP) == 130
    m = metrics_of(run)
    assert m["status"] == "interrupted" and m["error"].startswith("SIGINT after training")
    assert m["accuracy"] is not None and leftovers(run) == []
    assert (run / "mistakes.png").is_file()


def test_sigint_during_the_metrics_write_finds_the_run_recorded(tmp_path, monkeypatch):
    """metrics.json is written once, with the status decided just before: a signal during
    that write finds the run over, and the process exits as metrics.json says."""
    real = report.write_json

    def write_json(path, obj):
        if Path(path).name == "metrics.json":
            signal.raise_signal(signal.SIGINT)
        real(path, obj)

    monkeypatch.setattr(report, "write_json", write_json)
    run = tmp_path / "run"
    assert cnnlab_train(run, *MLP) == 0
    m = metrics_of(run)
    assert m["status"] == "completed" and m["accuracy"] is not None and leftovers(run) == []


def test_a_failing_confusion_plot_and_curve_are_two_warnings(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(report, "plot_confusion_matrix", broken)
    monkeypatch.setattr(report, "plot_loss_curve", broken)
    run = tmp_path / "run"
    assert cnnlab_train(run, *MLP) == 0
    m = metrics_of(run)
    assert m["status"] == "completed" and m["accuracy"] is not None
    assert m["warnings"] == [
        "loss_curve.png failed: MemoryError: ",
        "confusion_matrix.png failed: MemoryError: ",
    ]
    assert (run / "confusion_matrix.csv").is_file() and (run / "mistakes.png").is_file()


def test_an_interrupted_run_whose_metrics_cannot_be_written_says_so(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(files, "atomic_file", full_disk_for("metrics.json"))
    monkeypatch.setattr(run_module, "load_tensors", lambda *a: signal.raise_signal(signal.SIGINT))
    run = tmp_path / "run"
    assert cnnlab_train(run, *MLP) == 1
    line = one_error_line(capfd)
    assert "metrics.json: No space left on device" in line and "SIGINT" in line


@pytest.mark.parametrize("stage", list(MOMENTS))
def test_a_signal_at_any_stage_leaves_a_status_that_agrees_with_the_exit_code(signalled, stage):
    code, err, run = signalled[stage]
    sig = MOMENTS[stage]
    assert code == 128 + sig, err
    assert "Traceback" not in err
    m = metrics_of(run)
    assert m["status"] == "interrupted"
    assert m["error"].startswith(signal.Signals(sig).name)
    if stage == "pictures":
        assert m["accuracy"] is not None and (run / "checkpoints" / "last.pt").is_file()
    assert leftovers(run) == []


def test_run_whose_checkpoint_cannot_be_written_fails(tmp_path, monkeypatch):
    def disk_full(obj, f):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    code = cnnlab_train(tmp_path / "run", "model=mlp", *SMALL, "trainer.epochs=2")
    assert code == 1
    m = metrics_of(tmp_path / "run")
    assert m["status"] == "failed"
    assert "No space left on device" in m["error"] and "last.pt" in m["error"]
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


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
