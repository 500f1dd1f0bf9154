"""The one atomic write: every file cnnlab writes (run files, checkpoints, data caches) goes
through atomic_file, so a crash, a signal or a full disk mid-write never leaves a half file
where a whole one was expected, nor a temporary file behind."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cnnlab.outcome import RunError


class WriteError(RunError):
    """A run file that could not be written: a full disk, a folder that is not there."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"could not write {path}: {reason}")
        self.reason = reason


@contextlib.contextmanager
def atomic_file(path: Path):
    """A binary file that becomes `path`: written beside it under a temporary name, synced
    to disk, then renamed over it. Whatever stops the write (an error of the writer, a full
    disk, a signal), the temporary file is removed and `path` stays as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, text: str) -> None:
    """`text` as the file `path`, all or nothing (atomic_file); a failure is a WriteError
    that names the file."""
    try:
        with atomic_file(path) as f:
            f.write(text.encode())
    except OSError as e:
        raise WriteError(path, e.strerror or str(e)) from None
