"""The `cnnlab` console script's garbage collector: held off while the command loads its
modules, then their objects frozen out of its scans.

Loading torch, Hydra and matplotlib creates hundreds of thousands of objects that live
until the process ends, and each of Python's full collections walks all of them: five
in a 0-epoch run, 0.3-0.4 s of its CPU on the 2-core machine (issue 30). None of those
objects is garbage. So the console script (cli.entry) holds the collector off from its
first line, and a run lets it go once its modules are loaded (release, at the start of
the run): what was loaded is frozen (gc.freeze: never scanned again), and the collector
runs as usual from there, over what the run creates (a sweep's figures, its jobs'
models). A command that never releases it (help, a refusal, inspect, compare) ends in
seconds. A caller of cnnlab.api or cnnlab.cli.main keeps its own collector as it is.
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
