"""hydra_app: `cnnlab train` and cnnlab.train() compose each config once and check every job
before anything is written; HydraApp, the one adapter to Hydra's internals, is pinned to
the Hydra it was written for, so an upgrade that moves what it uses fails here.
What a run does once (formerly test_once): its config is checked once per job
(hydra_app.check_jobs), and a resume= run loads its checkpoint once."""

from __future__ import annotations

import inspect
import pickle
import re
import time
from pathlib import Path

import hydra
import pytest
import torch
from conftest import MLP, QUICK, RUN, cnnlab_train, metrics_of
from hydra import compose, initialize_config_dir
from hydra._internal.callbacks import Callbacks
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.hydra import Hydra
from hydra._internal.utils import _run_hydra, create_automatic_config_search_path
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_class

from cnnlab import checks, cli, hydra_app, threads, train
from cnnlab.outcome import CnnlabError

ADAPTER = "# ---- Hydra's internals: the one adapter"


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


def test_a_job_found_unchecked_checks_itself(tmp_path, monkeypatch, checks_made):
    # as in a joblib worker or an Optuna trial: the job finds nothing checked for it
    original = hydra_app.check_jobs

    def found_nothing(app, cfg):
        original(app, cfg)
        return {}

    monkeypatch.setattr(hydra_app, "check_jobs", found_nothing)
    assert cnnlab_train(tmp_path / "run", *MLP) == 0
    assert checks_made == [0, 0]


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


@pytest.fixture
def composed(monkeypatch) -> list:
    """The overrides of every config Hydra composes. ConfigLoaderImpl.load_configuration is
    the entry every compose goes through: Hydra.compose_config (run, multirun, get_mode,
    --help, --cfg), the Compose API (hydra.compose) and the launchers' load_sweep_config."""
    made, original = [], ConfigLoaderImpl.load_configuration

    def counted(self, config_name, overrides, *args, **kwargs):
        made.append(list(overrides))
        return original(self, config_name, overrides, *args, **kwargs)

    monkeypatch.setattr(ConfigLoaderImpl, "load_configuration", counted)
    return made


def test_a_run_composes_its_config_once(tmp_path, monkeypatch, composed):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "data"))
    run = tmp_path / "run"
    # about 5 s: the digits set is prepared in the empty data folder
    assert cnnlab_train(run, "data=digits", "trainer.epochs=1", "model=mlp", "pictures=false") == 0
    assert (run / "metrics.json").is_file()
    assert len(composed) == 1, composed


def test_a_sweep_with_a_bad_later_job_writes_nothing(tmp_path, capfd):
    # every job is checked before the first starts: the second's batch size stops the sweep
    sweep = tmp_path / "sweep"
    assert cnnlab_train(sweep, *QUICK, "trainer.batch_size=32,0", multirun=True) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: trainer.batch_size=0"), err
    assert not sweep.exists()


def test_train_refuses_a_preset_that_sweeps(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CnnlabError, match="hydra.mode=MULTIRUN") as raised:
        train("device=cpu", *QUICK, "experiment=width_depth")
    assert raised.value.exit_code == 2 and list(tmp_path.iterdir()) == []


def test_a_job_run_in_another_process_checks_itself():
    # joblib and submitit pickle the task function: what the check found stays here
    jobs = hydra_app.TrainJobs({("seed=0",): object()})
    assert pickle.loads(pickle.dumps(jobs)).checked == {}
    assert jobs.checked  # the command's own copy keeps them


def test_sweep_jobs_are_the_basic_sweepers_jobs():
    overrides = OverridesParser.create().parse_overrides(
        ["model=mlp,lenet5", "seed=range(2)", "trainer.epochs=1", "+model.x='a,b'"]
    )
    assert hydra_app.sweep_jobs(overrides) == BasicSweeper.split_arguments(overrides, None)[0]
    assert len(hydra_app.sweep_jobs(overrides)) == 4


def test_help_reads_one_config_repository_per_name_and_overrides(monkeypatch, capsys):
    made, original = [], ConfigLoaderImpl._parse_overrides_and_create_caching_repo

    def counted(self, config_name, overrides):
        made.append((config_name, tuple(overrides)))
        return original(self, config_name, overrides)

    monkeypatch.setattr(ConfigLoaderImpl, "_parse_overrides_and_create_caching_repo", counted)
    assert cli.main(["train", "--help"]) == 0
    assert "powered by Hydra" in capsys.readouterr().out
    assert made and len(made) == len(set(made)), made  # Hydra's own help: about 100


# ---- the adapter, pinned to Hydra 1.3 -----------------------------------------------------


def test_hydra_is_the_version_the_adapter_was_written_for():
    # HydraApp.run and .multirun are Hydra.run's and Hydra.multirun's steps after their
    # compose, as of Hydra 1.3: on another version, read those again and update them
    assert hydra.__version__.startswith("1.3."), hydra.__version__
    for method, steps in [
        (Hydra.run, ["on_run_start", "run_job(", "on_run_end", "ret.return_value"]),
        (Hydra.multirun, ["on_multirun_start", "instantiate_sweeper", "sweep(", "on_multirun_end"]),
    ]:
        source = inspect.getsource(method)
        assert [s for s in steps if s in source] == steps, method


def parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_what_the_adapter_calls_has_the_signature_it_calls_it_with():
    assert parameters(Hydra.__init__)[1:] == ["task_name", "config_loader"]
    assert parameters(Hydra.compose_config)[1:4] == ["config_name", "overrides", "run_mode"]
    assert parameters(ConfigLoaderImpl._parse_overrides_and_create_caching_repo)[1:] == [
        "config_name",
        "overrides",
    ]
    assert parameters(ConfigLoaderImpl.load_sweep_config)[1:] == [
        "master_config",
        "sweep_overrides",
    ]
    assert parameters(_run_hydra)[:5] == [
        "args",
        "args_parser",
        "task_function",
        "config_path",
        "config_name",
    ]
    assert parameters(create_automatic_config_search_path) == [
        "calling_file",
        "calling_module",
        "config_path",
    ]
    for hook in ("on_run_start", "on_run_end", "on_multirun_start", "on_multirun_end"):
        assert callable(getattr(Callbacks, hook))
    # the sweeper train.yaml gets by default, by the name check_jobs knows it by
    with initialize_config_dir(str(hydra_app.config_dir()), version_base="1.3"):
        sweeper = compose("train", return_hydra_config=True).hydra.sweeper._target_
    assert sweeper == hydra_app.BASIC_SWEEPER
    assert get_class(sweeper).__qualname__ == BasicSweeper.__qualname__


def lines_outside_the_adapter(pattern: re.Pattern) -> list[str]:
    """The lines of src/cnnlab matching `pattern`, hydra_app's adapter section left out."""
    found = []
    for path in sorted(Path(hydra_app.__file__).parent.rglob("*.py")):
        text = path.read_text()
        if path.name == "hydra_app.py":
            text = text.split(ADAPTER)[0]
        found += [f"{path.name}: {line}" for line in text.splitlines() if pattern.search(line)]
    return found


def test_hydras_internals_are_used_in_the_adapter_only():
    """`grep -rn "hydra._internal\\|sys.argv\\[" src/cnnlab` finds the adapter's lines alone:
    no module outside it imports Hydra's internals or reads sys.argv by index."""
    # grep's pattern: `.` is any character
    assert lines_outside_the_adapter(re.compile(r"hydra._internal|sys.argv\[")) == []


def test_sys_argv_is_written_in_the_adapter_only():
    """Arguments reach Hydra as arguments: outside the adapter (the completion script's
    name) no module assigns to sys.argv or an item of it."""
    assert lines_outside_the_adapter(re.compile(r"sys\.argv(\[[^]]*\])?\s*=[^=]")) == []
