"""Shared fixtures. Every `cnnlab` process a test starts runs offline, in a folder of the
test's own, with CNNLAB_DATA pointing at an empty folder inside it: no test reads or
fills a real data folder, and none reaches the network."""

import ast
import csv
import dataclasses
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure

import cnnlab.run
from cnnlab import cli, hydra_app

# what the entry points do first: tests that compose train.yaml themselves need the
# schemas and resolvers
hydra_app.setup()

# every file a completed run folder holds: the run-folder contract (the README's "A run
# folder" table); tensorboard/ only with logger=tensorboard, the two pictures only with
# pictures=true
RUN_FILES = [
    "metrics.json",
    "history.csv",
    "loss_curve.png",
    "confusion_matrix.png",
    "confusion_matrix.csv",
    "mistakes.png",
    "filters.png",
    "feature_maps.png",
    "checkpoints/last.pt",
    ".hydra/config.yaml",
    ".hydra/overrides.yaml",
    ".hydra/hydra.yaml",
    "command.txt",
    "train.log",
]

# metrics.json's timings and memory figures: the only keys two same-seed runs may differ
# in (the README's Reliability section names them; peak_gpu_mb and mps_allocated_mb are
# null but on CUDA and MPS)
TIMING_KEYS = {
    "train_seconds",
    "images_per_second",
    "started_at",
    "peak_rss_mb",
    "peak_gpu_mb",
    "mps_allocated_mb",
    "measure_seconds",
}

# the console script installed beside this interpreter (pip install -e . puts it there)
CNNLAB = Path(sys.executable).with_name("cnnlab")
# a closed port on this machine: a download attempt fails at once instead of going out
NO_NETWORK = "http://127.0.0.1:9"


def cli_env(cwd: Path) -> dict:
    """The environment of a test's cnnlab process: CNNLAB_DATA = <cwd>/data (created empty),
    every proxy variable aimed at a closed local port, so downloads fail fast, and one CPU
    thread."""
    data = Path(cwd) / "data"
    data.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "all_proxy")}
    env.update(CNNLAB_DATA=str(data), MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    # one thread, whatever the machine's load: trainer.threads=auto would choose by it, and
    # float sums in another order make a rerun differ in its last bits
    env["OMP_NUM_THREADS"] = "1"
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env[key] = NO_NETWORK
    env.pop("HYDRA_FULL_ERROR", None)  # tests read Hydra's short messages
    return env


@pytest.fixture(scope="session")
def run_cli():
    """run_cli(cwd, *args, timeout=300, prog=None, **env) -> CompletedProcess.

    Runs `cnnlab *args` (or `*prog, *args`) in `cwd` with cli_env(cwd) plus `env`; output
    is captured as text. A run past `timeout` seconds fails the test.
    """

    def run(cwd, *args, timeout=300, prog=None, **env):
        command = [*(prog or [str(CNNLAB)]), *map(str, args)]
        return subprocess.run(
            command,
            cwd=cwd,
            env={**cli_env(cwd), **env},
            text=True,
            capture_output=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    return run


# a run of a few steps: synthetic data, small sets, small batches
SMALL = ["data=synthetic", "data.train_size=256", "data.test_size=128", "trainer.batch_size=32"]
# a whole run of those steps, quickly: one epoch, no pictures (a later override wins: add
# trainer.epochs=2 or pictures=true where a test needs them)
QUICK = [*SMALL, "trainer.epochs=1", "pictures=false"]


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`):
    the tensors of these tests are tiny, and on a loaded 2-core machine OpenMP's start-up and
    spinning cost several times the work; no result changes (comparisons stay within one
    process or one setting)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cnnlab_train(run_dir: Path, *overrides: str, multirun: bool = False):
    """`cnnlab train` in this process; returns the exit code (an uncaught KeyboardInterrupt
    is returned as the string 'KeyboardInterrupt', so a test fails on it, not the session)."""
    folder = f"hydra.sweep.dir={run_dir}" if multirun else f"hydra.run.dir={run_dir}"
    args = [
        "train",
        *(["-m"] if multirun else []),
        "device=cpu",
        "trainer.progress=false",
        *overrides,
        folder,
    ]
    argv = sys.argv
    try:
        return cli.main(args)
    except SystemExit as e:
        return e.code
    except KeyboardInterrupt:
        return "KeyboardInterrupt"
    finally:
        sys.argv = argv


def metrics_of(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def history_of(run_dir: Path) -> list[dict]:
    """history.csv without the seconds column (a timing)."""
    with open(Path(run_dir) / "history.csv") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def patch_steps(monkeypatch, before_step) -> None:
    """Call before_step(state, n) before the n-th training step (1-based, over the run)."""
    original = cnnlab.run.start_run

    def start(*args, **kwargs):
        state, engine = original(*args, **kwargs)
        count = itertools.count(1)

        def counted(idx):
            before_step(state, next(count))
            return engine.step(idx)

        return state, dataclasses.replace(engine, step=counted)

    monkeypatch.setattr(cnnlab.run, "start_run", start)


@pytest.fixture
def saved(monkeypatch) -> dict[str, Figure]:
    """Every figure saved during the test, by file name."""
    figures: dict[str, Figure] = {}
    savefig = Figure.savefig

    def keep(fig, path, *args, **kwargs):
        figures[Path(path).name] = fig
        return savefig(fig, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


def compiler_modules_after(run_cli, cwd: Path, script: str) -> list[str]:
    """The modules of torch's compiler stack (torch._dynamo, torch._inductor: 1.7 s of a
    start) that a fresh interpreter holds after running `script`."""
    probe = (
        f"{script}\nimport sys\n"
        "print([m for m in sorted(sys.modules) if m.startswith(('torch._dynamo', "
        "'torch._inductor'))])\n"
    )
    proc = run_cli(cwd, "-c", probe, prog=[sys.executable])
    assert proc.returncode == 0, proc.stderr[-2000:]
    return ast.literal_eval(proc.stdout.strip().splitlines()[-1])
