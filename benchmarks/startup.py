"""Start-up cost: a 0-epoch `cnnlab train` against a bare `python -c "import torch"`.

Everything a run does but train (imports, config, data, model, report) is what a user waits
for on every command. Both commands run in new processes, interleaved so that a busy
machine slows both alike; the script prints both medians and their ratio (goal: <= 2.2, issue 22).

    python benchmarks/startup.py                # 5 of each
    python benchmarks/startup.py -n 9 --profile # and where the 0-epoch run's time goes
    python benchmarks/startup.py --against ../base  # and another checkout's run, interleaved
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

# this checkout's code, in this process and in every command it starts
SRC = str(Path(__file__).resolve().parents[1] / "src")
sys.path.insert(0, SRC)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))

GOAL = 2.2
RUN_ARGS = ["train", "data=digits", "trainer.epochs=0", "device=cpu", "trainer.progress=false"]


def cnnlab_command() -> list[str]:
    """The console script beside this interpreter (pip install -e . puts it there), else
    `python -m cnnlab`."""
    script = Path(sys.executable).with_name("cnnlab")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "cnnlab"]


def wall(command: list[str], cwd: str, src: str = SRC) -> float:
    """Seconds `command` takes, run with the code of the checkout whose src/ is `src`."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([src, *os.environ["PYTHONPATH"].split(os.pathsep)[1:]]),
    }
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"error: {' '.join(command)} exited {result.returncode}:\n{result.stderr[-2000:]}")
    return seconds


def measure(n: int, work: str, against: str | None = None) -> tuple[list[float], ...]:
    """n times each, interleaved: import torch, the 0-epoch run, and (if given) the
    0-epoch run of the checkout at `against`."""
    torch_times, run_times, other_times = [], [], []
    for i in range(n):
        torch_times.append(wall([sys.executable, "-c", "import torch"], work))
        run = [*cnnlab_command(), *RUN_ARGS, f"hydra.run.dir={work}/run{i}"]
        run_times.append(wall(run, work))
        line = f"  {i + 1}/{n}: import torch {torch_times[-1]:.2f} s, run {run_times[-1]:.2f} s"
        if against:
            run = [*cnnlab_command(), *RUN_ARGS, f"hydra.run.dir={work}/against{i}"]
            other_times.append(wall(run, work, str(Path(against).resolve() / "src")))
            line += f", --against's run {other_times[-1]:.2f} s"
        print(line)
    return torch_times, run_times, other_times


def import_times(work: str) -> list[tuple[float, int, str]]:
    """(cumulative seconds, nesting depth, module) for each import of one 0-epoch run, as
    `python -X importtime` reports them, in its order (a module after those it imports)."""
    command = [sys.executable, "-X", "importtime", "-m", "cnnlab", *RUN_ARGS]
    result = subprocess.run(
        [*command, f"hydra.run.dir={work}/importtime"], cwd=work, capture_output=True, text=True
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
    p.add_argument("-n", "--repeat", type=int, default=5, help="runs of each command (5)")
    p.add_argument("--profile", action="store_true", help="also show where the run's time goes")
    p.add_argument("--top", type=int, default=20, help="rows of each profile table (20)")
    p.add_argument("--against", metavar="CHECKOUT", help="also time another checkout's run")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cnnlab-startup-") as work:
        print(f"{' '.join(cnnlab_command() + RUN_ARGS)}  vs  python -c 'import torch'")
        torch_times, run_times, other_times = measure(args.repeat, work, args.against)
        bare, run = statistics.median(torch_times), statistics.median(run_times)
        verdict = "within" if run / bare <= GOAL else "over"
        print(f"median import torch: {bare:.2f} s")
        print(f"median 0-epoch run:  {run:.2f} s")
        print(f"ratio: {run / bare:.2f} ({verdict} the goal of {GOAL})")
        if other_times:
            other = statistics.median(other_times)
            print(f"median 0-epoch run of {args.against}: {other:.2f} s, ratio {other / bare:.2f}")
        if args.profile:
            profile(work, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
