"""Start-up cost: how long each kind of `cnnlab` command takes before it can answer, against
a bare `python -c "import torch"`.

Help, a refused typo and inspect should answer without torch, and a 0-epoch `cnnlab train`
(everything a run does but train: imports, config, data, model, report) within 1.6x of the
bare import (issue 30). Every command runs in a new process; the rows run interleaved, and
with several --src each row's checkouts side by side, so that a busy machine slows all
alike; the table gives medians.

    python benchmarks/startup.py                      # this checkout, 5 rounds
    python benchmarks/startup.py --src ../main/src --src src   # before and after
    python benchmarks/startup.py -n 9 --profile       # and where the 0-epoch run's time goes
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# this checkout's code, in this process (--profile) and by default in the commands
SRC = str(Path(__file__).resolve().parents[1] / "src")
sys.path.insert(0, SRC)

GOAL = 1.6  # the 0-epoch run against import torch
RUN_ARGS = ["train", "data=digits", "trainer.epochs=0", "device=cpu", "trainer.progress=false"]
# (row, arguments of cnnlab or None for the bare import, the exit code it must give)
ROWS = [
    ("cnnlab --help", ["--help"], 0),
    ("cnnlab compare --help", ["compare", "--help"], 0),
    ("cnnlab train seed=-1", ["train", "seed=-1"], 2),
    ("cnnlab inspect model=mlp", ["inspect", "model=mlp"], 0),
    ("cnnlab train --help", ["train", "--help"], 0),
    ("cnnlab train data=digits trainer.epochs=0", RUN_ARGS, 0),
    ('python -c "import torch"', None, 0),
]


def wall(python: str, args: list[str] | None, code: int, src: str, work: str) -> float:
    """Seconds one command takes in a new process, with the code of the checkout whose
    src/ is `src`: `python -m cnnlab ARGS`, or the bare import for None."""
    if args is None:
        command = [python, "-c", "import torch"]
    else:
        command = [python, "-m", "cnnlab", *args]
        if args[:1] == ["train"] and args != ["train", "--help"]:
            command.append(f"hydra.run.dir={tempfile.mkdtemp(dir=work, prefix='run')}")
    old = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, old]))}
    start = time.perf_counter()
    result = subprocess.run(command, cwd=work, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if result.returncode != code:
        sys.exit(
            f"error: {' '.join(command)} exited {result.returncode}, not {code}:\n"
            f"{result.stderr[-2000:]}"
        )
    return seconds


def measure(python: str, sources: list[str], n: int, work: str) -> dict:
    """{(row, src): [seconds, ...]}: n rounds after one untimed round (it fills the data
    cache in `work` and the OS's file cache); in each round every row, and in each row
    every checkout in turn."""
    times = {}
    for round_ in range(n + 1):
        for row, args, code in ROWS:
            for src in sources if args is not None else sources[:1]:
                seconds = wall(python, args, code, src, work)
                if round_:
                    times.setdefault((row, src), []).append(seconds)
        if round_:
            print(f"  round {round_}/{n} done", file=sys.stderr)
    return times


def table(times: dict, sources: list[str]) -> str:
    """Medians, one column per checkout, and each against the bare import torch."""
    bare = statistics.median(times[(ROWS[-1][0], sources[0])])
    names = [Path(s).resolve().parent.name or s for s in sources]
    width = max(len(row) for row, _, _ in ROWS)
    lines = [f"{'command':<{width}}  " + "  ".join(f"{name:>16}" for name in names)]
    for row, args, _ in ROWS:
        cells = []
        for src in sources if args is not None else sources[:1]:
            seconds = statistics.median(times[(row, src)])
            cells.append(f"{seconds:6.2f} s ({seconds / bare:4.2f}x)")
        lines.append(f"{row:<{width}}  " + "  ".join(f"{cell:>16}" for cell in cells))
    return "\n".join(lines)


def import_times(work: str) -> list[tuple[float, int, str]]:
    """(cumulative seconds, nesting depth, module) for each import of one 0-epoch run, as
    `python -X importtime` reports them, in its order (a module after those it imports)."""
    command = [sys.executable, "-X", "importtime", "-m", "cnnlab", *RUN_ARGS]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [*command, f"hydra.run.dir={work}/importtime"],
        cwd=work,
        capture_output=True,
        text=True,
        env=env,
    )
    rows = []
    for line in result.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            rows.append((int(m[2]) / 1e6, len(m[3]) // 2, m[4]))
    return rows


def profile(work: str, top: int) -> None:
    """Where one 0-epoch run's time goes: the import statements that cost (an import
    nested in another counts in the outer one), the packages that cost (each module's own
    time, summed per package, so nothing counts twice), and cProfile of the run."""
    rows = import_times(work)
    own = {}  # -X importtime's "self" column is the cumulative minus the nested imports
    for i, (cumulative, depth, name) in enumerate(rows):
        nested = 0.0
        for later_cumulative, later_depth, _ in reversed(rows[:i]):
            if later_depth <= depth:
                break
            if later_depth == depth + 1:
                nested += later_cumulative
        package = name.split(".")[0]
        own[package] = own.get(package, 0.0) + cumulative - nested
    statements = sorted((c, n) for c, d, n in rows if d == 0)[::-1][:top]
    print(f"\nimports the 0-epoch run starts (python -X importtime, cumulative, top {top}):")
    for seconds, name in statements:
        print(f"  {seconds:6.2f} s  {name}")
    print(f"\nseconds per package, nested imports included where they belong (top {top}):")
    for package, seconds in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {seconds:6.2f} s  {package}")

    os.chdir(work)  # where the runs above left their data cache (data.root is relative)
    sys.argv = ["cnnlab", *RUN_ARGS, f"hydra.run.dir={work}/profile"]
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    try:
        from cnnlab.cli import main

        main(sys.argv[1:])
    finally:
        profiler.disable()
    seconds = time.perf_counter() - start
    print(f"\ncProfile of one 0-epoch run in this process ({seconds:.2f} s), cnnlab's functions:")
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(r"cnnlab[/\\]", top)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", "--repeat", type=int, default=5, help="timed rounds (5)")
    p.add_argument(
        "--src",
        action="append",
        metavar="DIR",
        help="a checkout's src/ folder whose code the commands run (repeat it to compare "
        "checkouts side by side; default: this checkout's)",
    )
    p.add_argument("--python", default=sys.executable, help="the interpreter (this one)")
    p.add_argument("--profile", action="store_true", help="also show where the run's time goes")
    p.add_argument("--top", type=int, default=20, help="rows of each profile table (20)")
    args = p.parse_args(argv)
    sources = [str(Path(s).resolve()) for s in args.src or [SRC]]
    with tempfile.TemporaryDirectory(prefix="cnnlab-startup-") as work:
        print(f"medians of {args.repeat} interleaved rounds; x: against import torch")
        times = measure(args.python, sources, args.repeat, work)
        print(table(times, sources))
        bare = statistics.median(times[(ROWS[-1][0], sources[0])])
        for src in sources:
            ratio = statistics.median(times[(ROWS[-2][0], src)]) / bare
            verdict = "within" if ratio <= GOAL else "over"
            print(f"0-epoch run of {src}: {ratio:.2f}x import torch ({verdict} the goal of {GOAL})")
        if args.profile:
            profile(work, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
