"""Issue 22: what a run does once. Its config is checked once per job (train_main's
pre-flight; the job in the same process takes the checked config from there), and a
resume= run loads its checkpoint once (the check loads it; the run starts from that)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
import torch
from conftest import MLP, RUN, cnnlab_train, metrics_of
from hydra._internal.hydra import Hydra

from cnnlab import checks, hydra_app, threads


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
    assert cnnlab_train(tmp_path / "run", *MLP) == 0
    assert checks_made == [0]


def test_a_sweep_checks_each_job_once(tmp_path, checks_made):
    assert cnnlab_train(tmp_path / "sweep", *MLP, "seed=0,1", multirun=True) == 0
    assert sorted(checks_made) == [0, 1]
    assert not hydra_app.CHECKED  # nothing kept past the command


def test_a_run_composes_its_config_twice(tmp_path, monkeypatch):
    # the pre-flight's and the run's; Hydra's own third (Hydra.get_mode, only to read
    # hydra.mode) is answered from the pre-flight's
    composed, original = [], Hydra.compose_config

    def compose_config(self, *args, **kwargs):
        composed.append(kwargs.get("overrides"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Hydra, "compose_config", compose_config)
    assert cnnlab_train(tmp_path / "run", *MLP) == 0
    assert len(composed) == 2


def test_a_job_the_pre_flight_did_not_check_checks_itself(tmp_path, monkeypatch, checks_made):
    # as in a joblib worker or an Optuna trial: the job finds nothing checked for it
    keys = itertools.count()
    monkeypatch.setattr(hydra_app, "job_key", lambda cfg: next(keys))
    assert cnnlab_train(tmp_path / "run", *MLP) == 0
    assert checks_made == [0, 0]
    assert not hydra_app.CHECKED


def test_a_resumed_run_loads_its_checkpoint_once(tmp_path, monkeypatch):
    first = tmp_path / "first"
    assert cnnlab_train(first, *MLP) == 0
    loads, original = [], torch.load

    def load(f, *args, **kwargs):
        if Path(str(f)).name == "last.pt":
            loads.append(f)
        return original(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    again = tmp_path / "again"
    assert cnnlab_train(again, *MLP, "trainer.epochs=2", f"resume={first}") == 0
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


def test_a_sweep_with_one_split_that_cannot_train_runs_no_job(tmp_path, capfd):
    capfd.readouterr()
    code = cnnlab_train(
        tmp_path / "sweep", *RUN, "data=digits", "data.val_fraction=0.2,0.0001", multirun=True
    )
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "data.val_fraction=0.0001 holds out 0" in err[0]
    assert not (tmp_path / "sweep").exists()
