"""`cnnlab train` end to end.

Reliability (issue 6): one test, or a few, per promise; each one able to fail.

Runs go through the real command (`cnnlab.cli.main(["train", ...])`, in this process for
speed); the kill and signal tests start real subprocesses and really signal them. Data are
synthetic or IDX files made here, and the "download" comes from an HTTP server on
127.0.0.1, so nothing needs the network. GPU-only checks skip without CUDA.

The chapter's worked example on real data: one epoch of each model on Fashion-MNIST.

Start-up (issue 30): help, argparse's refusals and the refusals of Hydra and the range
checks answer without importing torch; a run sets torch's numeric flags only where they
differ from what it wants (torch.use_deterministic_algorithms imports torch's compiler
stack) and puts back those it set. The timings: benchmarks/startup.py."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import (
    IMPORTTIME,
    RUN_FILES,
    SMALL,
    SUBPROCESS_ENV,
    TIMING_KEYS,
    assert_same_results,
    cnnlab_train,
    compiler_modules_after,
    history_of,
    imported,
    metrics_of,
    patch_steps,
    train_subprocess,
    weights_of,
    write_mnist,
)
from hydra.errors import HydraException

from cnnlab import data, run
from cnnlab.checkpoints import load_checkpoint

# 256 steps an epoch, 300 epochs: a run that is stopped long before it ends
LONG = [
    "model=mlp",
    "data=synthetic",
    "data.train_size=2048",
    "trainer.batch_size=8",
    "trainer.epochs=300",
]


def folder_of(base: Path, seed: int, deadline: float) -> Path:
    while time.monotonic() < deadline:
        for folder in base.parent.glob(base.name + "*"):
            overrides = folder / ".hydra" / "overrides.yaml"
            if overrides.is_file() and f"seed={seed}" in overrides.read_text():
                return folder
        time.sleep(0.05)
    found = sorted(p.name for p in base.parent.iterdir())
    raise TimeoutError(f"no run folder for seed={seed}, only {found}: did two runs share one?")


def logged(folder: Path, text: str) -> bool:
    log = folder / "train.log"
    return log.is_file() and text in log.read_text()


@pytest.fixture(scope="module")
def signalled(tmp_path_factory):
    """Two long runs started at the same moment, into the same folder name (so they race
    for it); once each has finished an epoch, one gets SIGINT and the other SIGTERM: two at
    once, and a third just after the run says it stopped, while it writes its folder."""
    base = tmp_path_factory.mktemp("signals") / "run"
    command = [
        sys.executable,
        "-m",
        "cnnlab",
        "train",
        *LONG,
        "trainer.progress=false",
        "device=cpu",
        f"hydra.run.dir=${{cnnlab.unique:{base}}}",
    ]
    sigs = {0: signal.SIGINT, 1: signal.SIGTERM}
    procs = {
        seed: subprocess.Popen(
            [*command, f"seed={seed}"],
            env=SUBPROCESS_ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in sigs
    }
    results = {}
    try:
        started = time.monotonic() + 90  # each run has its folder once Hydra has started
        folders = {seed: folder_of(base, seed, started) for seed in sigs}
        deadline = time.monotonic() + 180
        sent = dict.fromkeys(sigs, 0)  # signals sent to each run so far
        while min(sent.values()) < 3:
            assert time.monotonic() < deadline, f"runs never got going: {folders}"
            for seed, sig in sigs.items():
                if sent[seed] == 0 and logged(folders[seed], "epoch 1/300"):
                    procs[seed].send_signal(sig)
                    procs[seed].send_signal(sig)
                    sent[seed] = 2
                elif sent[seed] == 2 and logged(folders[seed], f"{sig.name} at epoch"):
                    procs[seed].send_signal(sig)  # while the run folder is being written
                    sent[seed] = 3
            time.sleep(0.01)
        for seed, proc in procs.items():
            out, err = proc.communicate(timeout=max(1, deadline - time.monotonic()))
            results[sigs[seed]] = (proc.returncode, err, folders[seed])
    finally:
        for proc in procs.values():
            proc.kill()
            proc.communicate()
    return results


BAD_INPUT = [
    # overrides, texts the message must hold (key, value, what is allowed)
    (["model=nosuch"], ["model/nosuch", "lenet5, lenet5_deep", "mlp"]),
    (["data=nosuch"], ["data/nosuch", "mnist", "digits"]),
    (["data.name=nosuch"], ["data.name='nosuch'", "mnist", "synthetic"]),
    (["experiment=widht_depth"], ["experiment/widht_depth", "width_depth"]),
    (["variant=kernel5"], ["variant/kernel5", "kernel3", "kernel7"]),
    (["model.widht=2"], ["model.widht", "LeNetConfig", "allowed keys: name, channels"]),
    (["model.width=abc"], ["model.width=abc", "'abc'", "Float"]),
    (["model.activation=swish"], ["model.activation=swish", "leaky_relu, gelu, sigmoid, tanh"]),
    (["model.dropout=1.0"], ["model.dropout=1.0", "0 <= p < 1"]),
    (["model.width=["], ["model.width=[:"]),
    (["trainer.epochs=abc"], ["trainer.epochs", "'abc'", "Integer"]),
    (["trainer.epochs=-1"], ["trainer.epochs=-1", ">= 0"]),
    (["trainer.batch_size=-5"], ["trainer.batch_size=-5", "> 0"]),
    (["trainer.batch_size=0"], ["trainer.batch_size=0", "> 0"]),
    (["trainer.lr=0"], ["trainer.lr=0", "> 0"]),
    (["trainer.lr=-0.1"], ["trainer.lr=-0.1", "> 0"]),
    (["device=cuda:7"], ["device='cuda:7'", "available are cpu"]),
    (["model.norm=group", "model.groups=4"], ["model.groups=4", "6 channels", "divide"]),
    (["seed=-1"], ["seed=-1", "0..4294967295"]),
    (["data.train_size=0"], ["data.train_size=0", "> 0"]),
    (["model.kernel_size=40"], ["model.kernel_size=40", "below 1x1", "1x28x28"]),
    (["resume=."], ["resume=", "no such checkpoint"]),
    (["trainer.cuda_graph=true"], ["trainer.cuda_graph=true", "device=cuda"]),
]


DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def test_resume_gives_the_same_weights_and_figures(runs):
    assert metrics_of(runs.half)["epochs_completed"] == 2
    assert_same_results(runs.resumed, runs.full)
    assert metrics_of(runs.resumed)["resumed_from"] == str(runs.half)
    assert load_checkpoint(runs.resumed)["optimizer"]["state"][0]["step"] == 4 * 8


def test_resume_from_a_mid_epoch_interrupt_gives_the_same_result(runs):
    m = metrics_of(runs.interrupted)
    assert m["status"] == "interrupted" and m["epochs_completed"] == 1
    state = load_checkpoint(runs.interrupted)
    assert (state["epoch"], state["position"]) == (1, 4 * 32)  # 4 steps of batch 32
    assert_same_results(runs.resumed_mid_epoch, runs.full)
    assert metrics_of(runs.resumed_mid_epoch)["images_seen"] == 4 * 256


def test_resume_with_another_batch_size_goes_on_at_the_image_where_it_stopped(runs, tmp_path):
    run = tmp_path / "run"
    code = cnnlab_train(
        run, "model=lenet5", *SMALL, f"resume={runs.interrupted}", "trainer.epochs=4",
        "trainer.batch_size=16",
    )  # fmt: skip
    assert code == 0
    m = metrics_of(run)
    # every image of every epoch stepped on once: 128 of epoch 2 before, 128 after
    assert m["status"] == "completed" and m["images_seen"] == 4 * 256
    assert len(history_of(run)) == 4
    assert history_of(run)[0] == history_of(runs.interrupted)[0]
    assert load_checkpoint(run)["optimizer"]["state"][0]["step"] == 8 + 4 + 128 // 16 + 2 * 16


@pytest.mark.parametrize(
    "overrides, named",
    [(["model.width=2"], "model.width=1.0 (now 2.0)"), (["trainer.optimizer=sgd"], "'adam'")],
)
def test_resume_refuses_a_different_model_or_trainer(runs, tmp_path, capfd, overrides, named):
    run = tmp_path / "run"
    code = cnnlab_train(run, "model=lenet5", *SMALL, *overrides, f"resume={runs.half}")
    err = capfd.readouterr().err
    assert code == 2 and named in err and err.count("error:") == 1
    assert not run.exists()


def test_resume_takes_the_new_learning_rate(runs, tmp_path):
    run = tmp_path / "run"
    code = cnnlab_train(
        run, "model=lenet5", *SMALL, f"resume={runs.half}", "trainer.epochs=3", "trainer.lr=0.0005"
    )
    assert code == 0
    assert load_checkpoint(run)["optimizer"]["param_groups"][0]["lr"] == 0.0005


def test_same_seed_same_results_other_seed_other_results(runs):
    assert_same_results(runs.half, runs.twin)
    a, b = metrics_of(runs.half), metrics_of(runs.twin)
    assert {k: v for k, v in a.items() if k not in TIMING_KEYS} == {
        k: v for k, v in b.items() if k not in TIMING_KEYS
    }
    other, half = weights_of(runs.other_seed), weights_of(runs.half)
    assert all(not torch.equal(other[k], half[k]) for k in half)
    assert history_of(runs.other_seed) != history_of(runs.half)


def test_huge_learning_rate_diverges_with_exit_3(tmp_path):
    run = tmp_path / "run"
    assert cnnlab_train(run, "model=mlp", *SMALL, "trainer.lr=1e30", "trainer.epochs=2") == 3
    m = metrics_of(run)
    assert m["status"] == "diverged" and m["epochs_completed"] == 0
    assert "at epoch 1, step " in m["error"]
    assert "at epoch 1, step " in (run / "train.log").read_text()
    # no epoch completed: there is no checkpoint, and the message must not promise one
    assert not (run / "checkpoints" / "last.pt").exists()
    assert "checkpoint (epoch 0)" not in m["error"]


def test_non_finite_loss_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    good = {}

    def blow_up(state, n):  # step 11 = epoch 2, step 3 of 8: weights become Inf
        if n == 11:
            good["bytes"] = (run / "checkpoints" / "last.pt").read_bytes()
            with torch.no_grad():
                next(state.model.parameters()).fill_(float("inf"))

    patch_steps(monkeypatch, blow_up)
    assert cnnlab_train(run, "model=mlp", *SMALL, "trainer.epochs=3") == 3
    m = metrics_of(run)
    assert m["status"] == "diverged" and m["epochs_completed"] == 1
    assert "at epoch 2, step 3" in m["error"]
    assert "at epoch 2, step 3" in (run / "train.log").read_text()
    assert (run / "checkpoints" / "last.pt").read_bytes() == good["bytes"]  # never overwritten
    state = load_checkpoint(run)
    assert state["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    assert len(history_of(run)) == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_saves_a_checkpoint_and_exits_128_plus_signal(signalled, sig):
    code, stderr, folder = signalled[sig]
    assert code == 128 + sig, stderr[-2000:]
    m = metrics_of(folder)
    assert m["status"] == "interrupted"
    assert m["error"].startswith(f"{signal.Signals(sig).name} at epoch ")
    assert m["epochs_completed"] >= 1
    state = load_checkpoint(folder)
    assert state["epoch"] == m["epochs_completed"]
    assert 0 <= state["position"] < 2048  # in images; 0 when it came between epochs
    assert len(state["partial_losses"]) * 8 == state["position"]  # steps of batch 8
    assert len(history_of(folder)) == state["epoch"]


def test_resume_continues_an_interrupted_subprocess_run(signalled, tmp_path):
    _, _, folder = signalled[signal.SIGINT]
    state = load_checkpoint(folder)
    run = tmp_path / "resumed"
    code = cnnlab_train(run, *LONG, f"trainer.epochs={state['epoch'] + 1}", f"resume={folder}")
    assert code == 0
    m = metrics_of(run)
    assert m["status"] == "completed" and m["epochs_completed"] == state["epoch"] + 1
    assert history_of(run)[: state["epoch"]] == history_of(folder)
    assert m["accuracy"] > 0.5


def test_runs_started_together_never_share_a_folder(signalled):
    folders = {folder for _, _, folder in signalled.values()}
    assert len(folders) == 2
    for seed, folder in enumerate(sorted(folders, key=lambda f: metrics_of(f)["seed"])):
        assert metrics_of(folder)["seed"] == seed
        assert f"seed={seed}" in yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text())
        assert (folder / "train.log").read_text().count("training path") == 1


@pytest.mark.parametrize("overrides,texts", BAD_INPUT, ids=[" ".join(o) for o, _ in BAD_INPUT])
def test_bad_input_fails_before_any_data_loads(overrides, texts, tmp_path, monkeypatch, capfd):
    loaded = []
    monkeypatch.setattr(data, "load", lambda cfg: loaded.append(cfg))
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    empty = tmp_path / "no_data_here"
    empty.mkdir()
    run = tmp_path / "run"
    # data=mnist with no files: had the data loaded (or been downloaded), the folder would
    # not stay empty (with data.download=false the check would refuse the missing files)
    code = cnnlab_train(run, "data=mnist", f"data.root={empty}", *overrides)
    out, err = capfd.readouterr()
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert code == 2
    assert len(lines) == 1 and "error: " in lines[0], lines
    assert loaded == []
    for text in texts:
        assert text in lines[0], text
    assert list(empty.iterdir()) == []
    assert lines[0].startswith("error: ") and err.strip() == lines[0]  # on stderr
    assert not run.exists()  # refused before anything was written


def test_hydra_full_error_still_gives_the_whole_trace(tmp_path, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(HydraException, match="model.width=abc"):
        cnnlab_train(tmp_path / "run", "model.width=abc")
    assert os.environ["HYDRA_FULL_ERROR"] == "1"


def test_multirun_with_failing_jobs(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    # mnist's image files here are empty (found by the check, which counts the labels,
    # refused at the data load); lr=1e30 diverges
    labels = {
        "train-labels-idx1-ubyte": np.arange(300) % 10,
        "t10k-labels-idx1-ubyte": np.arange(100) % 10,
    }
    write_mnist(tmp_path / "no_data" / "MNIST" / "raw", labels, empty=True)
    code = cnnlab_train(
        sweep,
        "model=lenet5",
        "data.train_size=256",
        "data.test_size=128",
        "trainer.batch_size=32",
        "trainer.epochs=1",
        f"data.root={tmp_path / 'no_data'}",
        "data.download=false",
        "data=synthetic,mnist",
        "trainer.lr=0.001,1e30",
        multirun=True,
    )
    err = capsys.readouterr().err
    assert code == 1
    # job folders are named <number>_<overrides>; jobs run data x lr in order
    jobs = {int(p.name.split("_")[0]): p for p in sweep.iterdir() if (p / ".hydra").is_dir()}
    status = {n: metrics_of(p)["status"] for n, p in jobs.items()}
    assert status == {0: "completed", 1: "diverged", 2: "failed", 3: "failed"}
    assert "data=synthetic" in jobs[0].name and "trainer.lr=0.001" in jobs[0].name
    for file in RUN_FILES:
        assert (jobs[0] / file).is_file(), file
    assert "MNIST" in metrics_of(jobs[2])["error"]
    with open(sweep / "comparison.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["status"] for r in rows) == ["completed", "diverged", "failed", "failed"]
    assert "3 job(s) did not complete" in err
    assert str(sweep) in err
    for n in (1, 2, 3):  # each failed job by number and the overrides that set it apart
        assert f"{n}_" in err


def test_a_sweep_with_one_bad_job_is_refused_before_any_job_runs(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    # groups=3 does not divide LeNet-5's 6 channels: known from the config alone
    code = cnnlab_train(sweep, "model=lenet5", *SMALL, "model.norm=group", "model.groups=2,3",
                        multirun=True)  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: model.groups=3")
    assert not sweep.exists()


def test_out_of_memory_run_is_recorded_as_failed(tmp_path, monkeypatch):
    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(run, "fit", oom)
    assert cnnlab_train(tmp_path / "run", "model=mlp", *SMALL) == 1
    m = metrics_of(tmp_path / "run")
    assert m["status"] == "failed" and "smaller batch" in m["error"]
    assert "trainer.batch_size=32" in m["error"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_real_cuda_out_of_memory(tmp_path):
    # conv1 with 4096 channels on a batch of 20,000: ~190 GB of activations
    run = tmp_path / "run"
    proc = train_subprocess(
        "model=lenet5",
        "model.channels=[4096,16]",
        "data=synthetic",
        "data.train_size=20000",
        "trainer.batch_size=20000",
        "trainer.epochs=1",
        f"hydra.run.dir={run}",
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    m = metrics_of(run)
    assert m["status"] == "failed" and "smaller batch" in m["error"]


@pytest.mark.slow  # the full Fashion-MNIST, one epoch per model
@pytest.mark.skipif(not DEBIAN.is_dir(), reason="Debian's dataset-fashion-mnist not installed")
@pytest.mark.parametrize("model, params", [("lenet5", 44_426), ("mlp", 101_770)])
def test_one_epoch_on_fashion_mnist_reaches_80_percent(tmp_path, run_cli, model, params):
    run = tmp_path / "run"
    r = run_cli(
        tmp_path,
        "train",
        f"model={model}",
        "data=fashion_mnist",
        "trainer.epochs=1",
        "trainer.progress=false",
        f"hydra.run.dir={run}",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["params"] == params
    assert sum(c["support"] for c in metrics["per_class"].values()) == 10_000  # the full test set
    assert metrics["accuracy"] >= 0.80, metrics["accuracy"]


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
