"""Start-up (issue 30): help, argparse's refusals and the refusals of Hydra and the range
checks answer without importing torch; a run sets torch's numeric flags only where they
differ from what it wants (torch.use_deterministic_algorithms imports torch's compiler
stack) and puts back those it set. The timings: benchmarks/startup.py."""

import sys

import pytest
import torch
from conftest import compiler_modules_after

from cnnlab import devices, hydra_app
from cnnlab.checks import check_config
from cnnlab.config import TrainerConfig

# `python -X importtime -m cnnlab`: every module the command imports, one line each
IMPORTTIME = [sys.executable, "-X", "importtime", "-m", "cnnlab"]


def imported(stderr: str) -> set[str]:
    return {
        line.rsplit("|", 1)[1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:")
    }


def heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in ("torch", "hydra", "pandas", "matplotlib")}


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--help"], 0),
        (["compare", "--help"], 0),
        (["inspect", "--help"], 0),
        (["rerun", "--help"], 0),
        (["nosuch"], 2),  # a mistyped command
        (["compare"], 2),  # argparse: PATH missing
        (["compare", "runs", "--format", "xml"], 2),
        (["inspect", "--format", "xml"], 2),
        (["inspect", "--nosuch"], 2),
    ],
)
def test_help_and_argparse_errors_import_neither_torch_nor_hydra(tmp_path, run_cli, args, code):
    proc = run_cli(tmp_path, *args, prog=IMPORTTIME)
    assert proc.returncode == code, proc.stderr[-2000:]
    assert not heavy(imported(proc.stderr))


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["train", "--help"], 0, ""),
        (["train", "seed=-1"], 2, "seed=-1 is not allowed"),  # a range check
        (["train", "trainer.lr=abc"], 2, "trainer.lr"),  # a bad value, found by Hydra
        (["train", "model=nosuch"], 2, "model/nosuch"),  # a missing preset
        (["train", "model.nosuch=1"], 2, "nosuch"),  # an unknown key, found by Hydra
        (["train", "+model.nosuch=1"], 2, "model.nosuch is not a key"),  # found by the check
        (["inspect", "seed=-1"], 2, "seed=-1 is not allowed"),
        (["train", "-sc", "install=bash"], 0, ""),  # the completion script
    ],
)
def test_train_help_and_config_refusals_import_no_torch(tmp_path, run_cli, args, code, message):
    proc = run_cli(tmp_path, *args, prog=IMPORTTIME)
    assert proc.returncode == code, proc.stderr[-2000:]
    assert message in proc.stderr
    assert not {m for m in imported(proc.stderr) if m.split(".")[0] == "torch"}
    assert not list(tmp_path.glob("outputs"))  # and nothing written


def test_the_preflight_and_a_default_runs_numerics_import_no_compiler(tmp_path, run_cli):
    """What cnnlab itself does before training (compose, check on the meta device, the
    numeric flags of a default run) imports no torch._dynamo or torch._inductor:
    torch.use_deterministic_algorithms(False) on every run did, 1.8 s of each start."""
    script = (
        "import sys\n"
        "from cnnlab import hydra_app, devices\n"
        "from cnnlab.checks import check_config\n"
        "job = hydra_app.composed_jobs(['data=digits'], multirun=False)[0]\n"
        "checked = check_config(job)\n"
        "with devices.numerics(checked.config.trainer) as flags:\n"
        "    pass\n"
    )
    assert compiler_modules_after(run_cli, tmp_path, script) == []


def test_a_default_run_imports_no_compiler(tmp_path, run_cli):
    """A whole default run (trainer.compile=false: optimiser steps, the MACs of the inspect
    table, evaluation, plots) imports no torch._dynamo or torch._inductor: torch.optim and
    torch's flop counter did, 1.7 s of CPU of every run's start. Nor seaborn, which
    compare's plots need and a run's do not (1.4 s with pandas and scipy, which here come
    only with scikit-learn's first load of digits, before data.root holds them)."""
    proc = run_cli(tmp_path, "train", "data=digits", "trainer.epochs=1", prog=IMPORTTIME)
    assert proc.returncode == 0, proc.stderr[-2000:]
    modules = imported(proc.stderr)
    assert "torch.nn" in modules  # it did train
    assert not {m for m in modules if m.startswith(("torch._dynamo", "torch._inductor"))}
    assert not {m for m in modules if m.split(".")[0] in ("seaborn", "sympy")}


@pytest.fixture
def torch_flags():
    """The process's flags as they were, put back after the test whatever it did."""
    before = devices.current_numerics()
    saved = {name: get() for name, (get, _) in devices.SWITCHES.items()}
    yield before
    for name, value in saved.items():
        devices.SWITCHES[name][1](value)


def test_numerics_leaves_the_flags_that_already_fit_alone(torch_flags, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("use_deterministic_algorithms called for a flag as wanted")

    torch.use_deterministic_algorithms(False)
    monkeypatch.setattr(torch, "use_deterministic_algorithms", refuse)
    with devices.numerics(TrainerConfig()) as flags:
        assert flags["deterministic_algorithms"] is False


def test_numerics_sets_what_the_run_asks_and_puts_it_back(torch_flags):
    torch.backends.cudnn.benchmark = True  # not the run's: it must come back
    torch.use_deterministic_algorithms(False, warn_only=True)
    before = devices.current_numerics()
    with devices.numerics(TrainerConfig(precision="tf32", deterministic=True)) as flags:
        assert flags == {
            "tf32_matmul": True,
            "tf32_cudnn": True,
            "deterministic_algorithms": True,
            "cudnn_deterministic": True,
            "cudnn_benchmark": False,
        }
        assert devices.current_numerics() == flags
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
    assert devices.current_numerics() == before
    assert torch.backends.cudnn.benchmark
    assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.get_float32_matmul_precision() == "highest"


def test_numerics_puts_back_what_it_set_when_the_run_fails(torch_flags):
    before = devices.current_numerics()
    with pytest.raises(RuntimeError), devices.numerics(TrainerConfig(precision="tf32")):
        raise RuntimeError("the run failed")
    assert devices.current_numerics() == before


def test_check_config_still_checks_the_model_on_the_meta_device():
    job = hydra_app.composed_jobs(["model=mlp", "data=digits"], multirun=False)[0]
    checked = check_config(job)
    assert next(checked.model.parameters()).device.type == "meta"
