"""Checkpoints: one atomic save, and a load that takes tensors and plain values only."""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch

from cnnlab.files import atomic_file
from cnnlab.outcome import RunError, Status


class CheckpointError(RunError):
    """A checkpoint that cannot be written (the run failed), or read (resume= is bad input)."""


def save_checkpoint(state: dict, path: Path) -> None:
    """Written as files.write_atomic writes every run file: a process killed or a disk
    that fills mid-save leaves the previous checkpoint whole and no temporary file. A
    failed write raises (whatever torch.save raised: its zip writer's RuntimeError on a
    full disk too); it is never silent."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as f:
            torch.save(state, f)
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a process killed mid-save
            stale.unlink(missing_ok=True)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"could not write checkpoint {path}: {reason}") from None


def load_checkpoint(path: Path) -> dict:
    """Tensors and plain values only: a pickled object (code that would run on load) is
    refused, and a truncated or corrupt file is an error that names it."""

    def refuse(message: str) -> CheckpointError:
        return CheckpointError(f"resume={path}: {message}", Status.bad_input)

    path = Path(path)
    if path.is_dir():  # a run folder
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise refuse("no such checkpoint (give a run folder or a .pt file)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch names a refused object "Unsupported global: GLOBAL module.name"; any other
        # unpickling error is a file that is damaged or not a torch checkpoint at all
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if found:
            raise refuse(
                f"{path} holds a pickled Python object ({found[1]}), not only tensors and "
                f"plain values, and cnnlab loads checkpoints with weights_only=True"
            ) from None
        raise refuse(
            f"{path} is truncated or corrupt, or not a torch checkpoint "
            f"(unreadable with weights_only=True)"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise refuse(f"{path} is truncated or corrupt ({first_line})") from None
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise refuse(f"{path} is not a cnnlab checkpoint (no model or epoch entry)")
    return state
