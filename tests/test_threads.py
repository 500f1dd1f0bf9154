"""trainer.threads: how many CPU threads a run uses, recorded in metrics.json and train.log,
and the process's own thread count back after the run.

Issue 28: the validation split, early stopping, multi-scale checks and trainer.threads
attacked as a hostile user would. A split that holds out nothing or everything, or leaves
a class the test set holds out of training, is bad input found by the pre-flight check
from the real training count of every source: one `error:` line on stderr, exit 2, no run
folder. A run stopped early stays stopped when resumed."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch
from conftest import QUICK, RUN, cnnlab_train, metrics_of, patch_steps
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from cnnlab import hydra_app, threads
from cnnlab.outcome import ConfigError
from cnnlab.threads import busy_cores, choose_threads


def not_measured():
    raise AssertionError("busy cores measured where they cannot change the answer")


@pytest.mark.parametrize(
    "usable, current, busy, n_jobs, expected",
    [
        (2, 2, 0.1, None, 2),  # idle: torch's count, as before
        (2, 2, 1.9, None, 1),  # the machine: two other busy processes
        (2, 2, 0.9, None, 1),
        (8, 8, 2.6, None, 5),
        (2, 2, 5.0, None, 1),  # never below one
        (8, 4, 0.0, None, 4),  # OMP_NUM_THREADS=4 or a caller's set_num_threads(4)
        (8, 8, 0.0, 4, 2),  # four joblib jobs share eight cores
        (8, 8, 3.0, 2, 4),
        (8, 8, 6.0, 2, 2),
        (9, 9, 0.0, 2, 4),
        (8, 8, 0.0, 16, 1),
        (8, 8, 0.0, -2, 1),  # joblib: -2 is seven jobs
        (2, 2, 0.0, -1, 1),  # one job per core
    ],
)
def test_auto_takes_the_free_cores_of_its_share(usable, current, busy, n_jobs, expected):
    threads, why = choose_threads("auto", usable, current, lambda: busy, n_jobs)
    assert threads == expected
    assert f"{usable} usable cores" in why


def test_auto_reads_the_load_only_when_it_can_matter():
    assert choose_threads("auto", 2, 1, not_measured)[0] == 1
    assert choose_threads("auto", 2, 2, not_measured, n_jobs=-1)[0] == 1
    assert choose_threads("auto", 1, 1, not_measured)[0] == 1


def test_a_number_wins_over_cores_and_load():
    assert choose_threads(3, 2, 2, not_measured) == (3, "trainer.threads")
    assert choose_threads(1, 16, 16, not_measured, n_jobs=1) == (1, "trainer.threads")


def test_the_reason_names_load_jobs_and_a_lower_count():
    _, why = choose_threads("auto", 2, 2, lambda: 1.94)
    assert why == "2 usable cores, 1.9 busy with other work"
    _, why = choose_threads("auto", 8, 3, lambda: 0.0, n_jobs=2)
    assert why == (
        "8 usable cores, 2 jobs sharing them, at most 3, torch's count before the run, "
        "0.0 busy with other work"
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")
def test_a_busy_process_is_seen_at_once():
    """The load average takes a minute to see a new process; the busy time sees it now."""
    cpus = threads.usable_cpus()
    loop = "import time\nend = time.time() + 60\nwhile time.time() < end: pass"
    busy = subprocess.Popen([sys.executable, "-c", loop])
    try:
        time.sleep(0.3)  # its interpreter started
        assert busy_cores(cpus, window=0.3) >= 0.5
    finally:
        busy.kill()
        busy.wait(timeout=10)


def test_without_proc_stat_the_load_average_counts(monkeypatch):
    monkeypatch.setattr(threads, "busy_ticks", lambda cpus: None)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.5, 1.0, 0.5), raising=False)
    assert busy_cores({0, 1}) == 1.5


def test_a_run_records_its_threads(tmp_path):
    assert cnnlab_train(tmp_path, *QUICK) == 0
    # one_thread set 1: auto stays at or below the count the process had
    assert metrics_of(tmp_path)["threads"] == 1
    log = (tmp_path / "train.log").read_text()
    assert "threads: 1 (" in log and "usable cores" in log
    assert torch.get_num_threads() == 1


def test_an_explicit_number_is_used_and_the_count_put_back(tmp_path):
    assert cnnlab_train(tmp_path, *QUICK, "trainer.threads=2") == 0
    assert metrics_of(tmp_path)["threads"] == 2
    assert "threads: 2 (trainer.threads)" in (tmp_path / "train.log").read_text()
    assert torch.get_num_threads() == 1


def test_the_count_is_put_back_after_a_failed_run(tmp_path, monkeypatch):
    def fail(state, n):
        assert torch.get_num_threads() == 2
        raise RuntimeError("boom")

    patch_steps(monkeypatch, fail)
    assert cnnlab_train(tmp_path, *QUICK, "trainer.threads=2") == 1
    assert metrics_of(tmp_path)["status"] == "failed"
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("value", ["0", "-3", "many", "nan", "1.5", "true"])
def test_a_bad_thread_count_is_refused_before_the_run(tmp_path, capsys, value):
    run = tmp_path / "run"
    assert cnnlab_train(run, *QUICK, f"trainer.threads={value}") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: trainer.threads=")
    assert "use auto or a whole number >= 1" in err
    assert not run.exists()


def test_a_joblib_sweep_tells_each_job_its_n_jobs():
    overrides = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=3"]
    with initialize_config_dir(str(hydra_app.config_dir()), version_base="1.3"):
        joblib = compose("train", overrides=overrides, return_hydra_config=True)
        basic = compose("train", return_hydra_config=True)
    hydra_config = HydraConfig.instance()
    saved = hydra_config.cfg
    try:
        hydra_config.set_config(joblib)
        assert hydra_app.parallel_jobs() == 3
        hydra_config.set_config(basic)
        assert hydra_app.parallel_jobs() is None
    finally:
        hydra_config.cfg = saved


def test_threads_as_a_quoted_number_is_that_number(tmp_path):
    run = tmp_path / "run"
    assert cnnlab_train(run, *RUN, "data=digits", "data.train_size=100", "trainer.threads='1'") == 0
    assert metrics_of(run)["threads"] == 1
    with pytest.raises(ConfigError, match="trainer.threads='two' is not allowed"):
        from cnnlab.config import TrainerConfig

        TrainerConfig(threads="two")
