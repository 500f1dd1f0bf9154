"""How many CPU threads a run's tensor operations use (trainer.threads).

torch starts one intra-op thread per core. On a machine other work keeps busy that is
slow: the threads of one operation wait for each other while the OS runs something
else. On the 2-core CPU beside two busy processes a LeNet-5 epoch took 4.5-5.7x its
idle time with two threads, about 2.5x with one. OMP_WAIT_POLICY=passive (no spinning)
did not help (two threads: 2.16 s against 1.83 s spinning, 0.86 s with one thread), so
the thread count alone is the remedy, and no OpenMP variable is set.

`auto` takes torch's thread count as it stands (its default of one per core, or
OMP_NUM_THREADS, or what a library caller set) and lowers it to the cores that are free:
those this process may use, less the ones other processes keep busy, and in a parallel
sweep its share of them. A number is used as given.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

WINDOW = 0.1  # seconds over which other processes' use of the cores is measured
MARK_AGE = 30.0  # seconds mark_start's sample serves: a start-up is shorter


def usable_cpus() -> set[int]:
    """The CPUs this process may run on (a taskset or a container's cpuset limits them)."""
    try:
        return os.sched_getaffinity(0)
    except AttributeError:  # macOS, Windows
        return set(range(os.cpu_count() or 1))


def busy_ticks(cpus: set[int]) -> int | None:
    """Clock ticks `cpus` have spent busy since boot (Linux /proc/stat), None elsewhere."""
    try:
        with open("/proc/stat") as f:
            lines = [line.split() for line in f if line.startswith("cpu")]
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal (guest time is inside user already);
    # steal: another virtual machine had the core
    fields = [line[1:9] for line in lines if line[0][3:].isdigit() and int(line[0][3:]) in cpus]
    return sum(int(f[i]) for f in fields for i in (0, 1, 2, 5, 6, 7)) if fields else None


# a first sample taken as the command starts (mark_start): (cpus, ticks, own times, when)
_start: tuple | None = None


def mark_start() -> None:
    """Take busy_cores' first sample now, as the command starts, so that the window it
    measures is the start-up itself and the run's first busy_cores need not sleep."""
    global _start
    cpus = usable_cpus()
    _start = (cpus, busy_ticks(cpus), os.times(), time.monotonic())


def first_sample(cpus: set[int]) -> tuple:
    """mark_start's sample, used once (a later run in the process measures afresh) and
    only while it is recent (it says what other processes do now), else one taken now."""
    global _start
    start, _start = _start, None
    if (
        start is not None
        and start[0] == cpus
        and start[1] is not None
        and time.monotonic() - start[3] < MARK_AGE
    ):
        return start[1:]
    return busy_ticks(cpus), os.times(), time.monotonic()


def busy_cores(cpus: set[int], window: float = WINDOW) -> float:
    """How many of `cpus` other processes keep busy now: on Linux their busy time over at
    least `window` seconds (from mark_start's sample, if there is one) less this process's
    own, so neither this process's start-up nor its earlier runs count, and a process that
    just started or ended counts as it is now. Elsewhere the 1-minute load average, which
    lags and counts this process too."""
    before, own_before, started = first_sample(cpus)
    if before is None:
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    time.sleep(max(0.0, started + window - time.monotonic()))
    after, own_after = busy_ticks(cpus), os.times()
    seconds = time.monotonic() - started
    own = own_after.user + own_after.system - own_before.user - own_before.system
    return max(0.0, ((after - before) / os.sysconf("SC_CLK_TCK") - own) / seconds)


def choose_threads(
    setting: int | str,
    usable: int,
    current: int,
    busy: Callable[[], float],
    n_jobs: int | None = None,
) -> tuple[int, str]:
    """The intra-op thread count for a run, and why (for train.log).

    setting: trainer.threads (auto, or a number that wins); usable: the cores this process
    may use; current: torch's thread count before the run (auto never goes above it);
    busy(): how many cores other processes keep busy, called only when it can matter;
    n_jobs: a joblib sweep's hydra.launcher.n_jobs (-1 all cores, -2 all but one, ...)."""
    if setting != "auto":
        return int(setting), "trainer.threads"
    jobs = n_jobs or 1
    if jobs < 0:  # joblib's count from the end: -1 one job per core
        jobs = max(1, usable + 1 + jobs)
    why = [f"{usable} usable cores"]
    threads = min(current, max(1, usable // jobs))
    if jobs > 1:
        why.append(f"{jobs} jobs sharing them")
    if current < usable // jobs:
        why.append(f"at most {current}, torch's count before the run")
    if threads > 1:
        load = busy()
        threads = max(1, min(threads, usable - round(load)))
        why.append(f"{load:.1f} busy with other work")
    return threads, ", ".join(why)


@contextlib.contextmanager
def run_threads(setting: int | str, n_jobs: int | None = None):
    """Use the chosen thread count for one run (yields it), then put back the count the
    process had: a library caller's or a test's torch.set_num_threads stays its own, and
    in a sweep in one process each job chooses afresh."""
    import torch  # not at the top: the CLI marks its start (mark_start) before torch loads

    before = torch.get_num_threads()
    cpus = usable_cpus()
    threads, why = choose_threads(setting, len(cpus), before, lambda: busy_cores(cpus), n_jobs)
    log.info("threads: %d (%s)", threads, why)
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)
