"""The `cnnlab` console script's garbage collector: held off while the command loads its
modules, then their objects frozen out of its scans.

Loading torch, Hydra and cnnlab creates hundreds of thousands of objects that live until
the process ends, and each of Python's full collections walks all of them: five in a
0-epoch run, 0.3-0.4 s of its CPU on the 2-core machine (issue 30). So the console
script (cli.entry) holds the collector off from its first line, and a run lets it go
once its modules are loaded (release, at the start of the run): what the process holds
is frozen (gc.freeze: never scanned again; the garbage start-up left among it, 26,000 of
240,000 objects and about 3 MB in a 0-epoch run, stays until exit: collecting it first
took 0.15 s), and the collector runs as usual from there, over what the run creates (a
sweep's figures, its jobs' models). `cnnlab bench` lets it go before it times epochs,
as a run has it. A command that starts no run in its own process keeps it off to its
end: help, a refusal, inspect and compare end in seconds, and the parent of a joblib
sweep (its jobs run in processes of their own) mostly waits. A caller of cnnlab.api or
cnnlab.cli.main keeps its own collector as it is.
"""

from __future__ import annotations

import gc

_held = False  # hold() turned the collector off, and release() has not turned it on


def hold() -> None:
    """Turn the collector off until release(), for a process that starts a command."""
    global _held
    if gc.isenabled():
        gc.disable()
        _held = True


def release() -> None:
    """Freeze what the process holds now and turn the collector back on, if hold()
    turned it off; else (a library caller, a sweep's later job) nothing: a second freeze
    would keep the first job's garbage for ever."""
    global _held
    if _held:
        _held = False
        gc.freeze()
        gc.enable()
