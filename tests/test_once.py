"""Issue 22: what a run does once. Its config is checked once per job (hydra_app.check_jobs,
before the first job starts; the job in the same process takes what it found), and a
resume= run loads its checkpoint once (the check loads it; the run starts from that).
That a run composes its config once: test_hydra_app.py."""

import time
from pathlib import Path

import pytest
import torch
from conftest import SMALL, cnnlab_train, metrics_of

from cnnlab import checks, hydra_app, threads

pytestmark = pytest.mark.usefixtures("one_thread")

QUICK = [*SMALL, "model=mlp", "trainer.epochs=1", "pictures=false"]


@pytest.fixture
def checks_made(monkeypatch) -> list:
    """The configs check_config is called with, wherever it is called from."""
    made, original = [], checks.check_config

    def counted(cfg):
        made.append(cfg.seed)
        return original(cfg)

    monkeypatch.setattr(hydra_app, "check_config", counted)
    return made


def test_a_run_checks_its_config_once(tmp_path, checks_made):
    assert cnnlab_train(tmp_path / "run", *QUICK) == 0
    assert checks_made == [0]


def test_a_sweep_checks_each_job_once(tmp_path, checks_made):
    assert cnnlab_train(tmp_path / "sweep", *QUICK, "seed=0,1", multirun=True) == 0
    assert sorted(checks_made) == [0, 1]


def test_a_job_found_unchecked_checks_itself(tmp_path, monkeypatch, checks_made):
    # as in a joblib worker or an Optuna trial: the job finds nothing checked for it
    original = hydra_app.check_jobs

    def found_nothing(app, cfg):
        original(app, cfg)
        return {}

    monkeypatch.setattr(hydra_app, "check_jobs", found_nothing)
    assert cnnlab_train(tmp_path / "run", *QUICK) == 0
    assert checks_made == [0, 0]


def test_a_resumed_run_loads_its_checkpoint_once(tmp_path, monkeypatch):
    first = tmp_path / "first"
    assert cnnlab_train(first, *QUICK) == 0
    loads, original = [], torch.load

    def load(f, *args, **kwargs):
        if Path(str(f)).name == "last.pt":
            loads.append(f)
        return original(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    again = tmp_path / "again"
    assert cnnlab_train(again, *QUICK, "trainer.epochs=2", f"resume={first}") == 0
    assert metrics_of(again)["epochs_completed"] == 2
    assert len(loads) == 1


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="busy time from Linux /proc/stat")
def test_threads_auto_measures_from_the_command_start_without_waiting(monkeypatch):
    cpus = threads.usable_cpus()
    threads.mark_start()  # cli.main does this first
    time.sleep(threads.WINDOW)  # the start-up: imports, composing, the check, the data
    waits = []
    monkeypatch.setattr(threads.time, "sleep", waits.append)
    assert threads.busy_cores(cpus) >= 0
    assert sum(waits) == 0
    threads.busy_cores(cpus)  # a later run in the process measures afresh
    assert sum(waits) == pytest.approx(threads.WINDOW, abs=0.02)
