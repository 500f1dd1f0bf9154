"""cnnlab.checkpoints: one atomic save, and a load that takes tensors and plain values only.

Reliability (issue 6): one test, or a few, per promise; each one able to fail.

Runs go through the real command (`cnnlab.cli.main(["train", ...])`, in this process for
speed); the kill and signal tests start real subprocesses and really signal them. Data are
synthetic or IDX files made here, and the "download" comes from an HTTP server on
127.0.0.1, so nothing needs the network. GPU-only checks skip without CUDA."""

from __future__ import annotations

import errno
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import (
    SMALL,
    SUBPROCESS_ENV,
    cnnlab_train,
)

from cnnlab.checkpoints import CheckpointError, load_checkpoint, save_checkpoint


def snapshot(folder: Path) -> dict:
    """Every file under folder: bytes and mtime."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


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


class Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):  # unpickling this would create the marker file
        return (open, (self.marker, "w"))


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
