"""How a run ends: one status, one table of exit codes, one error base class.

A run ends as exactly one Status. metrics.json records it, and the process exits with the
code EXIT_CODES gives it. Errors that end a run are RunErrors carrying their status, so
no other code needs to know which exception means what.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    completed = "completed"
    failed = "failed"
    bad_input = "bad_input"
    diverged = "diverged"  # a non-finite loss
    interrupted = "interrupted"  # SIGINT or SIGTERM


# interrupted: 128 + the signal's number, as shells report a process a signal stopped
# (130 for SIGINT, 143 for SIGTERM)
EXIT_CODES = {
    Status.completed: 0,
    Status.failed: 1,
    Status.bad_input: 2,
    Status.diverged: 3,
    Status.interrupted: 128,
}


class RunError(Exception):
    """An error that ends a run; its message names the key or file, the value and the
    remedy. `status` decides the exit code (a subclass or the caller may change it)."""

    status = Status.failed

    def __init__(self, message: str, status: Status | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status


class CnnlabError(RunError):
    """What the shell would print as its one `error:` line, raised by the Python API
    (cnnlab.api) instead: the same message, and the exit code `cnnlab` would exit with."""

    status = Status.bad_input

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]


@dataclass
class Outcome:
    """How a run (or the part of it that trains) ended, and what to say about it."""

    status: Status
    message: str = ""
    signal: int = signal.SIGINT  # read only when interrupted

    @property
    def exit_code(self) -> int:
        interrupted = self.status == Status.interrupted
        return EXIT_CODES[self.status] + (int(self.signal) if interrupted else 0)


class ConfigError(RunError, ValueError):
    """A config value that cannot work; the message names the key, the value and what is allowed."""

    status = Status.bad_input
