"""Reliability (issue 6): one test, or a few, per promise; each one able to fail.

Runs go through the real command (`cnnlab.cli.main(["train", ...])`, in this process for
speed); the kill and signal tests start real subprocesses and really signal them. Data are
synthetic or IDX files made here, and the "download" comes from an HTTP server on
127.0.0.1, so nothing needs the network. GPU-only checks skip without CUDA.
"""

from __future__ import annotations

import csv
import errno
import functools
import gzip
import hashlib
import http.server
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import (
    RUN_FILES,
    SMALL,
    TIMING_KEYS,
    cnnlab_train,
    history_of,
    metrics_of,
    patch_steps,
)
from hydra.errors import HydraException

from cnnlab import data, devices, run
from cnnlab.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from cnnlab.config import DataConfig
from cnnlab.data.idx import IDX_FILES

SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
pytestmark = pytest.mark.usefixtures("one_thread")


def train_subprocess(*overrides: str) -> subprocess.CompletedProcess:
    """`cnnlab train device=cuda ...` in a process of its own (a CUDA context per run)."""
    command = [sys.executable, "-m", "cnnlab", "train", "device=cuda", "trainer.progress=false"]
    return subprocess.run(
        [*command, *overrides], env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300
    )


def weights_of(run_dir: Path) -> dict:
    return load_checkpoint(run_dir)["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


def snapshot(folder: Path) -> dict:
    """Every file under folder: bytes and mtime."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ---- 1. atomic checkpoints --------------------------------------------------------------

KILL_MID_SAVE = """
import io, os, sys, time
import torch
from cnnlab.checkpoints import save_checkpoint

path = sys.argv[1]
save_checkpoint({"model": {"w": torch.ones(3)}, "epoch": 1}, path)
real_save = torch.save

def slow_save(obj, f):  # the real bytes, but only half of them, then hang until killed
    buf = io.BytesIO()
    real_save(obj, buf)
    f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    f.flush()
    os.fsync(f.fileno())
    print("half written", flush=True)
    time.sleep(120)

torch.save = slow_save
save_checkpoint({"model": {"w": torch.zeros(100_000)}, "epoch": 2}, path)
"""


def test_checkpoint_killed_mid_save_keeps_the_previous_one(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_MID_SAVE, str(path)],
        env=SUBPROCESS_ENV,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "half written"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        proc.kill()
    state = load_checkpoint(tmp_path)  # the run folder resolves to checkpoints/last.pt
    assert state["epoch"] == 1 and torch.equal(state["model"]["w"], torch.ones(3))
    # the half-written temporary may remain, but never under a name that passes for one
    for leftover in path.parent.iterdir():
        assert leftover == path or (leftover.name.startswith(".") and leftover.suffix != ".pt")
    # the next save (a resumed run writing its epoch) clears what the killed one left
    assert any(p.name.endswith(".tmp") for p in path.parent.iterdir())
    save_checkpoint({"model": {}, "epoch": 2}, path)
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_checkpoint_write_failure_is_an_error(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}, "epoch": 1}, path)
    before = path.read_bytes()

    def disk_full(obj, f):
        f.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device") as e:
        save_checkpoint({"model": {"w": torch.zeros(3)}, "epoch": 2}, path)
    assert str(path) in str(e.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary left
    monkeypatch.undo()

    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the checkpoint folder should be")
    with pytest.raises(CheckpointError, match="not_a_folder"):
        save_checkpoint({"model": {}, "epoch": 1}, blocker / "checkpoints" / "last.pt")


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


# ---- 2 and 3. resume and seeds: a set of small LeNet-5 runs, made once ------------------


class Runs:
    """Runs made on first use and shared by the tests below (LeNet-5, synthetic, 8 steps
    an epoch)."""

    def __init__(self, root: Path):
        self.root = root

    def _run(self, name, *overrides, expect=0, interrupt_at=None):
        folder = self.root / name
        with pytest.MonkeyPatch.context() as mp:
            if interrupt_at is not None:  # a real SIGINT, raised inside step `interrupt_at`
                patch_steps(
                    mp, lambda state, n: n == interrupt_at and signal.raise_signal(signal.SIGINT)
                )
            code = cnnlab_train(folder, "model=lenet5", *SMALL, *overrides)
        assert code == expect, (name, code)
        return folder

    @functools.cached_property
    def full(self):  # 4 epochs straight
        return self._run("full", "trainer.epochs=4")

    @functools.cached_property
    def half(self):  # 2 epochs ...
        return self._run("half", "trainer.epochs=2")

    @functools.cached_property
    def resumed(self):  # ... then resumed to 4
        return self._run("resumed", f"resume={self.half}", "trainer.epochs=4")

    @functools.cached_property
    def interrupted(self):  # SIGINT at step 4 of epoch 2's 8
        return self._run("interrupted", "trainer.epochs=4", expect=130, interrupt_at=12)

    @functools.cached_property
    def resumed_mid_epoch(self):
        checkpoint = self.interrupted / "checkpoints" / "last.pt"
        return self._run("resumed_mid_epoch", f"resume={checkpoint}", "trainer.epochs=4")

    @functools.cached_property
    def twin(self):  # the same as `half`, again
        return self._run("twin", "trainer.epochs=2")

    @functools.cached_property
    def other_seed(self):
        return self._run("other_seed", "trainer.epochs=2", "seed=1")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return Runs(tmp_path_factory.mktemp("runs"))


def assert_same_results(a: Path, b: Path) -> None:
    assert_same_weights(weights_of(a), weights_of(b))
    ma, mb = metrics_of(a), metrics_of(b)
    for key in ("status", "accuracy", "f1_macro", "per_class", "epochs_completed"):
        assert ma[key] == mb[key], key
    assert history_of(a) == history_of(b)


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


# ---- 4. a loss that turns NaN or Inf ----------------------------------------------------


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


# ---- 5 and 10. SIGINT / SIGTERM on real subprocesses, started together -------------------


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


# ---- 6. checkpoints load weights_only; corrupt ones are named ---------------------------


class Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):  # unpickling this would create the marker file
        return (open, (self.marker, "w"))


def test_pickled_payload_is_refused_and_never_runs(tmp_path):
    marker, evil = tmp_path / "payload_ran", tmp_path / "evil.pt"
    torch.save({"model": {}, "epoch": 1, "history": [], "payload": Payload(marker)}, evil)
    with pytest.raises(CheckpointError, match="weights_only=True") as e:
        load_checkpoint(evil)
    assert str(evil) in str(e.value)
    assert not marker.exists()

    code = cnnlab_train(tmp_path / "run", "model=mlp", *SMALL, f"resume={evil}")
    assert code == 2  # the file named by resume= is bad input
    assert not (tmp_path / "run").exists()
    assert not marker.exists()

    torch.load(evil, weights_only=False)["payload"].close()  # the payload is live: the
    assert marker.exists()  # checks above would have seen it run


def test_corrupt_checkpoint_on_resume_is_named_and_nothing_is_touched(runs, tmp_path, capfd):
    original = tmp_path / "original"
    shutil.copytree(runs.half, original)
    checkpoint = original / "checkpoints" / "last.pt"
    good = checkpoint.read_bytes()

    truncated, garbage = tmp_path / "truncated.pt", tmp_path / "garbage.pt"
    truncated.write_bytes(good[: len(good) // 2])
    garbage.write_bytes(b"\x00not a checkpoint" * 100)
    for bad in (truncated, garbage):
        with pytest.raises(CheckpointError, match="truncated or corrupt") as e:
            load_checkpoint(bad)
        assert str(bad) in str(e.value)

    checkpoint.write_bytes(good[: len(good) // 2])
    before = snapshot(original)
    code = cnnlab_train(
        tmp_path / "run", "model=lenet5", *SMALL, f"resume={original}", "trainer.epochs=4"
    )
    assert code == 2
    assert str(checkpoint) in capfd.readouterr().err
    assert not (tmp_path / "run").exists()
    assert snapshot(original) == before


# ---- 7. bad input fails before any data loads -------------------------------------------

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


# ---- 8. dataset files: missing, truncated, corrupted; download from a local mirror ------


def idx(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: zero, zero, 0x08, ndim, big-endian sizes, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def tiny_mnist(n_train=20, n_test=10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10,
    }


def write_mnist(raw: Path, arrays: dict, gz: bool = False, empty: bool = False) -> None:
    """The IDX files of `arrays` in raw; with empty=True the four files, empty (damaged)."""
    raw.mkdir(parents=True, exist_ok=True)
    for name in IDX_FILES if empty else ():
        (raw / name).write_bytes(b"")
    for name, array in arrays.items():
        if gz:
            (raw / f"{name}.gz").write_bytes(gzip.compress(idx(array), mtime=0))
        else:
            (raw / name).write_bytes(idx(array))


def mnist_cfg(root: Path, **kwargs) -> DataConfig:
    return DataConfig(name="mnist", root=str(root), **kwargs)


def test_missing_dataset_names_folder_files_and_remedies(tmp_path):
    with pytest.raises(data.DataError) as e:
        data.load(mnist_cfg(tmp_path, download=False))
    message = str(e.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    for name in IDX_FILES:
        assert name in message
    assert "data=digits" in message and "data.root" in message


CORRUPTIONS = {
    "truncated images": ("train-images-idx3-ubyte", lambda b: b[: len(b) // 2], "truncated"),
    "bad header": ("t10k-images-idx3-ubyte", lambda b: b"\x08\x08" + b[2:], "bad header"),
    "labels that do not match": ("t10k-labels-idx1-ubyte", lambda b: idx(np.zeros(3)), "match"),
    "corrupt gzip": ("train-labels-idx1-ubyte.gz", lambda b: b[:10] + b"\xff" * 20, "be read"),
}


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_damaged_dataset_file_is_named_with_a_remedy(tmp_path, name):
    file, damage, text = CORRUPTIONS[name]
    raw = tmp_path / "MNIST" / "raw"
    write_mnist(raw, tiny_mnist(), gz=file.endswith(".gz"))
    assert len(data.load(mnist_cfg(tmp_path, download=False)).y_train) == 20  # whole: loads
    (raw / file).write_bytes(damage((raw / file).read_bytes()))
    with pytest.raises(data.DataError, match=text) as e:
        data.load(mnist_cfg(tmp_path, download=False))
    assert str(raw / file) in str(e.value)
    assert "delete" in str(e.value)


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """An HTTP server on 127.0.0.1 serving tmp_path/mirror; yields (url, folder, requests)."""
    for key in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(key, raising=False)  # urllib would send 127.0.0.1 to a proxy
    folder = tmp_path / "mirror"
    folder.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, fmt, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", folder, requests
    server.shutdown()
    server.server_close()


def test_download_from_a_local_mirror_checks_checksums(tmp_path, mirror, monkeypatch):
    import torchvision.datasets as tvd

    url, served, requests = mirror
    arrays = tiny_mnist()
    write_mnist(served, arrays, gz=True)
    good = {f"{n}.gz": hashlib.md5((served / f"{n}.gz").read_bytes()).hexdigest() for n in arrays}
    # torchvision checks each archive against the md5 in MNIST.resources: make it ours
    monkeypatch.setattr(tvd.MNIST, "resources", list(good.items()))

    # a wrong checksum: the last archive is served damaged
    last = served / "t10k-labels-idx1-ubyte.gz"
    last.write_bytes(gzip.compress(idx(np.ones(10)), mtime=0))
    root = tmp_path / "data"
    raw = root / "MNIST" / "raw"
    with pytest.raises(data.DataError, match="checksum") as e:
        data.load(mnist_cfg(root, mirror=url))
    assert "t10k-labels-idx1-ubyte.gz" in str(e.value) and str(raw) in str(e.value)
    assert not list(raw.glob("t10k-labels-idx1-ubyte*"))  # the bad archive is not kept
    assert any(r.endswith("t10k-labels-idx1-ubyte.gz") for r in requests)

    # the mirror fixed: the next run downloads what is missing and loads
    write_mnist(served, {"t10k-labels-idx1-ubyte": arrays["t10k-labels-idx1-ubyte"]}, gz=True)
    requests.clear()
    ds = data.load(mnist_cfg(root, mirror=url))
    assert set(requests) == {"/t10k-labels-idx1-ubyte.gz"}  # the good archives were kept
    assert torch.equal(ds.x_train[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert torch.equal(ds.y_test, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]).long())


def test_unreachable_mirror_fails_with_the_offline_options(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(data.DataError) as e:
        data.load(mnist_cfg(tmp_path, mirror=f"http://127.0.0.1:{port}/"))
    assert f"127.0.0.1:{port}" in str(e.value) and "data=digits" in str(e.value)


# ---- 9. multirun: one failing job does not stop the others ------------------------------


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


# ---- 11. out of memory ------------------------------------------------------------------


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
