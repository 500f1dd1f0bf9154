"""Start-up (issue 30): help, argparse's refusals and the refusals of Hydra and the range
checks answer without importing torch; a run sets torch's numeric flags only where they
differ from what it wants (torch.use_deterministic_algorithms imports torch's compiler
stack) and puts back those it set. The timings: benchmarks/startup.py."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import (
    SMALL,
    assert_same_results,
    cnnlab_train,
    metrics_of,
    train_subprocess,
)

from cnnlab import devices
from cnnlab.config import TrainerConfig


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


def test_each_sweep_job_trains_with_its_own_numeric_flags(tmp_path):
    before = devices.current_numerics()
    sweep = tmp_path / "sweep"
    code = cnnlab_train(
        sweep, "model=mlp", *SMALL, "trainer.epochs=1",
        "trainer.precision=tf32,fp32", "trainer.deterministic=true,false", multirun=True,
    )  # fmt: skip
    assert code == 0
    jobs = sorted(p for p in sweep.iterdir() if (p / "metrics.json").exists())
    assert len(jobs) == 4
    for job in jobs:
        trainer = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())["trainer"]
        tf32, deterministic = trainer["precision"] == "tf32", trainer["deterministic"]
        assert metrics_of(job)["numerics"] == {
            "tf32_matmul": tf32,
            "tf32_cudnn": tf32,
            "deterministic_algorithms": deterministic,
            "cudnn_deterministic": True,
            "cudnn_benchmark": False,
        }, job.name
    assert devices.current_numerics() == before  # and nothing outlives the sweep


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_deterministic_cuda_runs_are_identical(tmp_path):
    folders = [tmp_path / "a", tmp_path / "b"]
    for folder in folders:
        proc = train_subprocess(
            "model=lenet5",
            *SMALL,
            "trainer.epochs=2",
            "trainer.deterministic=true",
            f"hydra.run.dir={folder}",
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert_same_results(*folders)
