"""The `cnnlab` command as a user runs it: subcommands, Hydra's flags, errors that stop a run
before any data loads, one real training run end to end (every file of
conftest.RUN_FILES, checked against numbers computed here), run-folder naming, and the wheel.

The command line does what it says (issue 18): a preset that is a sweep runs as one, a
sweep value where one run is meant is one error line, a closed stdout ends quietly, the
help lists only real config groups, MLflow names a sweep's experiment as the user does.

Start-up (issue 30): help, argparse's refusals and the refusals of Hydra and the range
checks answer without importing torch; a run sets torch's numeric flags only where they
differ from what it wants (torch.use_deterministic_algorithms imports torch's compiler
stack) and puts back those it set. The timings: benchmarks/startup.py."""

import csv
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import (
    CNNLAB,
    IMPORTTIME,
    PNG_MAGIC,
    PROCESS_RUN,
    RUN_FILES,
    SMALL,
    cli_env,
    imported,
    one_error_line,
    output,
)

import cnnlab.cli
import cnnlab.hydra_app
from cnnlab import cli, data, loggers
from cnnlab.config import (
    DataConfig,
    LeNetConfig,
    MLflowLoggerConfig,
    MLPConfig,
)
from cnnlab.data.idx import IDX_FILES
from cnnlab.models import build_model, count_params

METRICS_KEYS = [
    "images_seen",
    "numerics",
    "macs",
    "receptive_field",
    "status",
    "model",
    "data",
    "params",
    "accuracy",
    "f1_macro",
    "per_class",
    "epochs_completed",
    "train_seconds",
    "images_per_second",
    "device",
    "seed",
    "torch_version",
]


HISTORY_HEADER = ["epoch", "seed", "train_loss", "test_loss", "test_accuracy", "seconds"]


DIGITS_TEST_SIZE = 450


# a process that fails before loading data still imports torch and Hydra: seconds, not more
FAST_FAIL_SECONDS = 30


def run_folders(cwd: Path) -> list[Path]:
    """Every run folder under cwd/outputs (a folder holding .hydra/)."""
    return sorted(p.parent for p in (cwd / "outputs").rglob(".hydra"))


def assert_no_data_loaded(cwd: Path) -> None:
    """The data folder is as the fixture made it (empty) and nothing trained."""
    assert list((cwd / "data").iterdir()) == [], "data was looked for or downloaded"
    for name in ("history.csv", "last.pt", "loss_curve.png", "confusion_matrix.csv"):
        assert not list(cwd.rglob(name)), f"{name} written by a run that should not have trained"
    for path in cwd.rglob("metrics.json"):
        assert json.loads(path.read_text())["status"] == "failed"


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory, run_cli):
    cwd = tmp_path_factory.mktemp("lenet_run")
    day = date.today()
    result = run_cli(cwd, "train", "model=lenet5", "data=digits", "trainer.epochs=2", timeout=600)
    assert result.returncode == 0, output(result)
    (folder,) = run_folders(cwd)
    return {"cwd": cwd, "folder": folder, "result": result, "days": (day, date.today())}


@pytest.fixture(scope="module")
def lenet_metrics(lenet_run):
    return json.loads((lenet_run["folder"] / "metrics.json").read_text())


def read_confusion_csv(path: Path) -> tuple[list[str], np.ndarray]:
    rows = list(csv.reader(path.open()))
    classes = rows[0][1:]
    assert [r[0] for r in rows[1:]] == classes
    return classes, np.array([[int(v) for v in r[1:]] for r in rows[1:]])


REPO = Path(__file__).resolve().parents[1]


TINY = [*SMALL, "seeds=1", "trainer.epochs=1", "pictures=false", "device=cpu"]


def main(monkeypatch, cwd: Path, *args) -> int:
    monkeypatch.chdir(cwd)
    try:
        return cli.main(list(args))
    except SystemExit as e:
        return e.code


def heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in ("torch", "hydra", "pandas", "matplotlib")}


EXIT_NOW = """
import atexit, sys, threading, time
from pathlib import Path
from cnnlab.cli import exit_now
out = Path(sys.argv[1])
atexit.register(lambda: print("atexit ran"))
print("x" * 100_000)  # more than a pipe's buffer, unflushed: stdout is a pipe here
if sys.argv[2] == "thread":
    threading.Thread(target=lambda: (time.sleep(0.5), out.write_text("joined"))).start()
exit_now(eval(sys.argv[3]))
"""


def test_help_lists_the_subcommands(tmp_path, run_cli):
    result = run_cli(tmp_path, "--help")
    assert result.returncode == 0, output(result)
    for command in ("train", "compare", "bench"):
        assert re.search(rf"^\s+{command}\b", result.stdout, re.M), result.stdout


def test_python_dash_m_cnnlab_works(tmp_path, run_cli):
    result = run_cli(tmp_path, "--help", prog=[sys.executable, "-m", "cnnlab"])
    assert result.returncode == 0, output(result)
    assert "train" in result.stdout and "compare" in result.stdout


def test_unknown_command_exits_2_naming_it(tmp_path, run_cli):
    result = run_cli(tmp_path, "nosuch")
    assert result.returncode == 2
    assert "nosuch" in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_train_help_is_hydras_help(tmp_path, run_cli):
    result = run_cli(tmp_path, "train", "--help")
    assert result.returncode == 0, output(result)
    assert "powered by Hydra" in result.stdout
    groups = result.stdout.split("== Config ==")[0]
    for group, option in [("model", "lenet5_wide"), ("data", "digits"), ("trainer", "default")]:
        assert re.search(rf"^{group}:.*\b{option}\b", groups, re.M), groups
    assert not (tmp_path / "outputs").exists()


def test_train_cfg_job_prints_the_config_and_creates_nothing(tmp_path, run_cli):
    result = run_cli(tmp_path, "train", "--cfg", "job", "model=mlp", "trainer.epochs=3")
    assert result.returncode == 0, output(result)
    cfg = yaml.safe_load(result.stdout)
    assert cfg["model"]["name"] == "mlp" and cfg["model"]["hidden"] == [128]
    assert cfg["trainer"]["epochs"] == 3 and cfg["data"]["name"] == "mnist"
    assert "hydra" not in cfg
    assert not (tmp_path / "outputs").exists()
    assert_no_data_loaded(tmp_path)


def test_bad_input_through_the_console_script_is_one_line_and_exit_2_before_any_data(
    tmp_path, run_cli
):
    """The console script's path (entry, its fast exit) for bad input. Every kind of bad
    input runs in-process: test_cmd_train's BAD_INPUT (one line, exit 2, no data, no run
    folder) and test_config (compose and range errors)."""
    started = time.monotonic()
    # the default data is MNIST, absent from the empty data folder: had the run gone as far
    # as loading data, it would have made data/MNIST/raw and tried to download
    result = run_cli(tmp_path, "train", "model=lenet5", "model.widht=2")
    elapsed = time.monotonic() - started
    assert result.returncode == 2, output(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output(result)
    assert "model.widht" in lines[0] and "allowed keys: name, channels" in lines[0], lines[0]
    assert "Traceback" not in output(result)
    assert elapsed < FAST_FAIL_SECONDS
    assert not (tmp_path / "outputs").exists()  # stopped before making a run folder
    assert_no_data_loaded(tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_exits_nonzero_listing_available_devices(tmp_path, run_cli):
    result = run_cli(tmp_path, "train", "device=cuda")  # default data: MNIST, absent here
    assert result.returncode != 0
    lines = [line for line in output(result).splitlines() if "device='cuda'" in line]
    assert len(lines) == 1, output(result)
    assert "available" in lines[0] and "cpu" in lines[0], lines[0]
    assert "Traceback" not in output(result)
    assert_no_data_loaded(tmp_path)


def test_mnist_missing_and_offline_fails_fast_naming_folder_files_and_alternatives(
    tmp_path, run_cli
):
    started = time.monotonic()
    result = run_cli(tmp_path, "train", "data=mnist", timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert elapsed < 30, f"took {elapsed:.0f} s to give up"
    text = output(result)
    assert str(tmp_path / "data" / "MNIST" / "raw") in text, text
    for name in IDX_FILES:
        assert name in text
    assert "data=digits" in text and "fashion_mnist" in text and "Debian" in text, text
    assert "Traceback" not in text
    # no partial file left behind; the download failed in the check: exit 1, no run folder
    assert not [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
    assert result.returncode == 1 and result.stderr.startswith("error: mnist files not found")
    assert run_folders(tmp_path) == [] and not (tmp_path / "outputs").exists()


def test_run_folder_is_outputs_date_time_model(lenet_run):
    relative = lenet_run["folder"].relative_to(lenet_run["cwd"])
    match = re.fullmatch(
        r"outputs/(\d{4}-\d{2}-\d{2})/\d{2}-\d{2}-\d{2}_lenet5(-\d+)?", relative.as_posix()
    )
    assert match, relative
    assert date.fromisoformat(match[1]) in lenet_run["days"]
    assert str(lenet_run["folder"]) in output(lenet_run["result"])  # the log says where


def test_run_folder_has_every_file(lenet_run):
    folder = lenet_run["folder"]
    missing = [name for name in RUN_FILES if not (folder / name).is_file()]
    assert not missing, f"missing in {folder}: {missing}"
    assert not list(folder.rglob("*.tmp")), "a temporary file was left behind"


@pytest.mark.parametrize(
    "name",
    ["loss_curve.png", "confusion_matrix.png", "mistakes.png", "filters.png", "feature_maps.png"],
)
def test_plots_are_png_images(lenet_run, name):
    from PIL import Image

    path = lenet_run["folder"] / name
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) >= 200


def test_metrics_json_has_every_key_with_sane_values(lenet_metrics):
    m = lenet_metrics
    assert not [k for k in METRICS_KEYS if k not in m], m.keys()
    assert m["status"] == "completed"
    assert (m["model"], m["data"]) == ("lenet5", "digits")
    assert (m["params"], m["macs"], m["receptive_field"]) == (44426, 281640, 16)
    assert m["images_seen"] == 2 * 1347  # two epochs of digits' training images
    assert 0 <= m["accuracy"] <= 1 and 0 <= m["f1_macro"] <= 1
    assert m["accuracy"] > 0.2  # two epochs on digits learn something (chance is 0.1)
    assert m["epochs_completed"] == 2
    assert m["train_seconds"] > 0 and m["images_per_second"] > 0
    auto = (
        "cuda"
        if torch.cuda.is_available()
        else "mps"
        if torch.backends.mps.is_available()
        else "cpu"
    )
    assert m["device"].split(":")[0] == auto  # device=auto, as in the chapter
    assert m["seed"] == 0
    assert m["torch_version"] == torch.__version__


def test_per_class_scores(lenet_metrics):
    per_class = lenet_metrics["per_class"]
    assert list(per_class) == [str(i) for i in range(10)]
    for name, scores in per_class.items():
        assert set(scores) >= {"precision", "recall", "f1", "support"}, name
        assert all(0 <= scores[k] <= 1 for k in ("precision", "recall", "f1")), name
    assert sum(s["support"] for s in per_class.values()) == DIGITS_TEST_SIZE


def test_history_csv_has_one_row_per_epoch(lenet_run, lenet_metrics):
    with (lenet_run["folder"] / "history.csv").open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == HISTORY_HEADER
        rows = list(reader)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for r in rows:
        assert float(r["train_loss"]) > 0 and float(r["test_loss"]) > 0
        assert 0 <= float(r["test_accuracy"]) <= 1 and float(r["seconds"]) > 0
    assert float(rows[-1]["test_accuracy"]) == pytest.approx(lenet_metrics["accuracy"])


def test_confusion_matrix_agrees_with_metrics_and_sklearn(lenet_run, lenet_metrics):
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    classes, cm = read_confusion_csv(lenet_run["folder"] / "confusion_matrix.csv")
    assert classes == [str(i) for i in range(10)] and cm.shape == (10, 10)
    assert cm.sum() == DIGITS_TEST_SIZE
    assert np.trace(cm) / cm.sum() == pytest.approx(lenet_metrics["accuracy"], abs=1e-9)
    # rebuild the label pairs from the counts (rows true, columns predicted) for sklearn
    pairs = [(t, p) for t in range(10) for p in range(10) for _ in range(cm[t, p])]
    y_true, y_pred = np.array(pairs).T
    expected = f1_score(y_true, y_pred, average="macro", labels=range(10), zero_division=0)
    assert lenet_metrics["f1_macro"] == pytest.approx(expected, abs=1e-9)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=range(10), zero_division=0
    )
    for i, name in enumerate(classes):
        got = lenet_metrics["per_class"][name]
        assert got["support"] == support[i] == cm[i].sum()
        assert got["precision"] == pytest.approx(precision[i], abs=1e-9)
        assert got["recall"] == pytest.approx(recall[i], abs=1e-9)
        assert got["f1"] == pytest.approx(f1[i], abs=1e-9)


def test_checkpoint_loads_weights_only_and_reproduces_the_accuracy(lenet_run, lenet_metrics):
    state = torch.load(
        lenet_run["folder"] / "checkpoints" / "last.pt", map_location="cpu", weights_only=True
    )
    assert state["epoch"] == 2
    model = build_model(LeNetConfig(), (1, 28, 28), 10)
    model.load_state_dict(state["model"])  # strict: every tensor, no extra ones
    assert count_params(model) == 44426
    # the saved weights are the final ones: they score what metrics.json says
    ds = data.load(DataConfig(name="digits", root=str(lenet_run["cwd"] / "data")))  # the run's own
    with torch.no_grad():
        predictions = model.eval()(data.to_device(ds.x_test, torch.device("cpu"), [0.5, 0.5]))
    accuracy = (predictions.argmax(1) == ds.y_test).double().mean().item()
    assert accuracy == pytest.approx(lenet_metrics["accuracy"], abs=2 / DIGITS_TEST_SIZE)


def test_hydra_files_record_the_run(lenet_run):
    hydra_dir = lenet_run["folder"] / ".hydra"
    config = yaml.safe_load((hydra_dir / "config.yaml").read_text())
    assert config["model"]["name"] == "lenet5" and config["data"]["name"] == "digits"
    assert config["trainer"]["epochs"] == 2
    overrides = yaml.safe_load((hydra_dir / "overrides.yaml").read_text())
    assert overrides == ["model=lenet5", "data=digits", "trainer.epochs=2"]
    assert yaml.safe_load((hydra_dir / "hydra.yaml").read_text())["hydra"]["job"]["name"]


def test_train_log_has_a_line_per_epoch(lenet_run):
    log = (lenet_run["folder"] / "train.log").read_text()
    for epoch in (1, 2):
        assert re.search(rf"epoch {epoch}/2\b.*loss.*accuracy", log), log
    # the inspect table, with its totals row
    assert re.search(r"total\s+44,426\s+281,640\s+16", log), log


def test_pictures_false_leaves_the_pictures_out(tmp_path, run_cli):
    args = ["model=mlp", "data=synthetic", "trainer.epochs=1", "trainer.progress=false"]
    result = run_cli(tmp_path, "train", *args, "pictures=false", "hydra.run.dir=run")
    assert result.returncode == 0, output(result)
    assert (tmp_path / "run" / "metrics.json").is_file()
    assert not (tmp_path / "run" / "filters.png").exists()
    assert not (tmp_path / "run" / "feature_maps.png").exists()


def test_mlp_end_to_end(tmp_path, run_cli):
    result = run_cli(
        tmp_path,
        "train",
        "model=mlp",
        "data=digits",
        "trainer.epochs=1",
        "trainer.progress=false",
        timeout=600,
    )
    assert result.returncode == 0, output(result)
    (folder,) = run_folders(tmp_path)
    assert re.fullmatch(r"\d{2}-\d{2}-\d{2}_mlp(-\d+)?", folder.name), folder.name
    # an MLP has no conv stage to show: every file but feature_maps.png
    assert [name for name in RUN_FILES if not (folder / name).is_file()] == ["feature_maps.png"]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert (metrics["status"], metrics["model"], metrics["params"]) == ("completed", "mlp", 101770)
    assert metrics["macs"] == 101632
    assert metrics["epochs_completed"] == 1 and 0 <= metrics["accuracy"] <= 1
    state = torch.load(folder / "checkpoints" / "last.pt", weights_only=True)
    build_model(MLPConfig(), (1, 28, 28), 10).load_state_dict(state["model"])


def test_unique_dir_appends_a_number_when_the_folder_exists(tmp_path):
    base = str(tmp_path / "outputs" / "2026-01-01" / "12-00-00_lenet5")
    first, second, third = (cnnlab.hydra_app.unique_dir(base) for _ in range(3))
    assert (first, second, third) == (base, f"{base}-2", f"{base}-3")
    assert all(Path(p).is_dir() for p in (first, second, third))


def test_two_runs_started_together_get_two_folders(tmp_path, run_cli):
    """Two processes at once, both with the default naming and both with one fixed name:
    each pair ends in two folders. (MNIST with empty files makes the runs stop right after
    claiming one: the check finds the files, the data load refuses them.)"""
    fixed = "hydra.run.dir=${cnnlab.unique:outputs/same}"
    jobs = [("default", []), ("default", []), ("fixed", [fixed]), ("fixed", [fixed])]
    for name, _ in jobs:
        raw = tmp_path / name / "data" / "MNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for file in IDX_FILES:
            (raw / file).write_bytes(b"")
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(
            pool.map(
                lambda job: run_cli(tmp_path / job[0], "train", "data.download=false", *job[1]),
                jobs,
            )
        )
    assert [r.returncode for r in results] == [1] * len(jobs), [output(r) for r in results]
    default = run_folders(tmp_path / "default")
    assert len(default) == 2, default
    assert all(re.fullmatch(r"\d{2}-\d{2}-\d{2}_lenet5(-2)?", p.name) for p in default), default
    fixed_folders = [
        p.relative_to(tmp_path / "fixed").as_posix() for p in run_folders(tmp_path / "fixed")
    ]
    assert fixed_folders == ["outputs/same", "outputs/same-2"]


def test_wheel_ships_the_configs_and_finds_them_from_any_folder(tmp_path):
    pytest.importorskip("hatchling", reason="building the wheel offline needs hatchling")
    wheels, target, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, REPO],
        check=True,
        timeout=300,
        capture_output=True,
    )
    (wheel,) = wheels.glob("cnnlab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {"cnnlab/configs/train.yaml", "cnnlab/cli.py"}
    for group in ("model", "data", "trainer"):
        expected |= {
            f"cnnlab/configs/{group}/{p.name}" for p in (REPO / "configs" / group).glob("*.yaml")
        }
    assert not expected - names, sorted(expected - names)

    subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "-q", "--target", target, wheel],
        check=True,
        timeout=300,
        capture_output=True,
    )
    script = (
        "from hydra import compose, initialize_config_dir\n"
        "import cnnlab.hydra_app\n"
        "cnnlab.hydra_app.setup()\n"
        "d = cnnlab.hydra_app.config_dir()\n"
        "with initialize_config_dir(config_dir=str(d), version_base='1.3'):\n"
        "    cfg = compose('train', overrides=['model=mlp', 'data=digits'])\n"
        "print(cnnlab.hydra_app.__file__, d, cfg.model.name, cfg.data.name, sep='\\n')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=elsewhere,
        text=True,
        capture_output=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(target)},
    )
    assert result.returncode == 0, result.stderr
    module, config_dir, model, data_name = result.stdout.split()
    assert Path(module).is_relative_to(target)  # the installed copy, not the source tree
    assert Path(config_dir) == target / "cnnlab" / "configs"
    assert (model, data_name) == ("mlp", "digits")


def test_an_added_key_no_schema_reads_is_refused(tmp_path, run_cli):
    r = run_cli(tmp_path, "train", "+model.foo=1", "data=synthetic", "trainer.progress=false")
    assert r.returncode == 2
    assert "model.foo is not a key" in r.stdout + r.stderr
    assert "allowed are name, channels, fc, width" in r.stdout + r.stderr


def test_a_preset_that_sweeps_runs_every_job_without_m(tmp_path, monkeypatch, capfd):
    sweep = tmp_path / "sweep"
    code = main(
        monkeypatch,
        tmp_path,
        "train",
        "experiment=activations",
        *TINY,
        "trainer.progress=false",
        f"hydra.sweep.dir={sweep}",
    )
    assert code == 0, capfd.readouterr().err
    jobs = sorted(p.name for p in sweep.iterdir() if (p / "metrics.json").is_file())
    assert len(jobs) == 3, jobs  # relu, leaky_relu, gelu
    activations = {json.loads((sweep / j / "metrics.json").read_text())["status"] for j in jobs}
    assert activations == {"completed"}


def test_a_preset_sweep_is_checked_job_by_job_before_anything_runs(tmp_path, monkeypatch, capfd):
    """Only the group-norm job of experiment=normalization is bad (5 groups cannot divide
    6 channels): the whole sweep is refused before a folder exists, without -m too."""
    sweep = tmp_path / "sweep"
    code = main(
        monkeypatch,
        tmp_path,
        "train",
        "experiment=normalization",
        *TINY,
        "model.groups=5",
        f"hydra.sweep.dir={sweep}",
    )
    assert code == 2
    assert "model.groups=5" in one_error_line(capfd)
    assert not sweep.exists()


@pytest.mark.parametrize("command", ["train", "inspect"])
def test_a_sweep_value_where_one_run_is_meant(command, tmp_path, monkeypatch, capfd):
    code = main(monkeypatch, tmp_path, command, "model.width=1,2", "device=cpu")
    assert code == 2
    line = one_error_line(capfd)
    assert "model.width=1,2" in line and "-m" in line
    assert list(tmp_path.iterdir()) == []


def test_inspect_of_a_preset_that_sweeps_names_its_values(tmp_path, monkeypatch, capfd):
    assert main(monkeypatch, tmp_path, "inspect", "experiment=width_depth") == 2
    line = one_error_line(capfd)
    assert "model.width=1,2" in line and "model.depth=1,2" in line
    # with every swept key set, it is one model again
    assert (
        main(
            monkeypatch,
            tmp_path,
            "inspect",
            "experiment=width_depth",
            "model.width=2",
            "model.depth=2",
        )
        == 0
    )


def test_rerun_with_a_sweep_value_is_refused(tmp_path, monkeypatch, capfd):
    run = tmp_path / "old"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- data=synthetic\n")
    code = main(monkeypatch, tmp_path, "rerun", str(run), "model.width=1,2")
    capfd_out = capfd.readouterr()
    assert code == 2
    errors = capfd_out.err.splitlines()
    assert len(errors) == 1 and "model.width=1,2" in errors[0] and "-m" in errors[0]


def test_rerun_of_a_preset_job_is_one_run(tmp_path, monkeypatch, capfd):
    """A job of experiment=activations fixes the swept key: its rerun is a run, not a sweep."""
    run = tmp_path / "old"
    (run / ".hydra").mkdir(parents=True)
    overrides = ["experiment=activations", "model.activation=gelu", *TINY]
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    new = tmp_path / "new"
    code = main(
        monkeypatch,
        tmp_path,
        "rerun",
        str(run),
        "trainer.progress=false",
        f"hydra.run.dir={new}",
    )
    assert code == 0, capfd.readouterr().err
    assert json.loads((new / "metrics.json").read_text())["status"] == "completed"


def test_device_names_apart_from_devices_that_are_absent(tmp_path, monkeypatch, capfd):
    assert main(monkeypatch, tmp_path, "inspect", "device=gpu") == 2
    line = one_error_line(capfd)
    assert "auto, cpu, cuda, cuda:N" in line and "mps" in line
    assert main(monkeypatch, tmp_path, "inspect", "device=cuda:99") == 2
    assert "not available on this machine" in one_error_line(capfd)


def test_mlflow_names_a_sweep_experiment_from_the_working_folder(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sweep = tmp_path / "outputs" / "sweeps" / "day" / "time"
    (sweep / "0_job").mkdir(parents=True)
    tracker = loggers.MLflowLogger(MLflowLoggerConfig(tracking_uri=uri), sweep / "0_job", {}, sweep)
    tracker.close()
    client = MlflowClient(tracking_uri=uri)
    assert client.get_experiment_by_name("outputs/sweeps/day/time") is not None
    assert client.get_experiment_by_name(str(sweep)) is None


@pytest.mark.parametrize(
    "args", [["inspect", "--format", "json"], ["--help"]], ids=["inspect", "help"]
)
def test_a_closed_stdout_ends_quietly(args, tmp_path):
    """`cnnlab inspect | head -0`: the reader is gone before cnnlab writes."""
    proc = subprocess.Popen(
        [str(CNNLAB), *args],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    proc.stdout.close()  # the reader goes away at once
    try:
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=120)
    finally:
        proc.kill()
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert code == 141  # 128 + SIGPIPE, as a shell reports a tool that SIGPIPE ended


def test_train_help_lists_no_schema_group(tmp_path, run_cli):
    result = run_cli(tmp_path, "train", "--help", timeout=120)
    assert result.returncode == 0, result.stderr
    groups = result.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    assert "model: lenet5" in groups
    assert "schema" not in groups, groups


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--help"], 0),
        (["compare", "--help"], 0),
        (["inspect", "--help"], 0),
        (["rerun", "--help"], 0),
        (["nosuch"], 2),  # a mistyped command
        (["compare"], 2),  # argparse: PATH missing
        (["compare", "runs", "--format", "xml"], 2),
        (["inspect", "--format", "xml"], 2),
        (["inspect", "--nosuch"], 2),
    ],
)
def test_help_and_argparse_errors_import_neither_torch_nor_hydra(tmp_path, run_cli, args, code):
    proc = run_cli(tmp_path, *args, prog=IMPORTTIME)
    assert proc.returncode == code, proc.stderr[-2000:]
    assert not heavy(imported(proc.stderr))


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["train", "--help"], 0, ""),
        (["train", "seed=-1"], 2, "seed=-1 is not allowed"),  # a range check
        (["train", "trainer.lr=abc"], 2, "trainer.lr"),  # a bad value, found by Hydra
        (["train", "model=nosuch"], 2, "model/nosuch"),  # a missing preset
        (["train", "model.nosuch=1"], 2, "nosuch"),  # an unknown key, found by Hydra
        (["train", "+model.nosuch=1"], 2, "model.nosuch is not a key"),  # found by the check
        (["inspect", "seed=-1"], 2, "seed=-1 is not allowed"),
        (["train", "-sc", "install=bash"], 0, ""),  # the completion script
    ],
)
def test_train_help_and_config_refusals_import_no_torch(tmp_path, run_cli, args, code, message):
    proc = run_cli(tmp_path, *args, prog=IMPORTTIME)
    assert proc.returncode == code, proc.stderr[-2000:]
    assert message in proc.stderr
    assert not {m for m in imported(proc.stderr) if m.split(".")[0] == "torch"}
    assert not list(tmp_path.glob("outputs"))  # and nothing written


@pytest.mark.parametrize(
    "thread, code, returncode, stderr",
    [("none", "3", 3, ""), ("none", "None", 0, ""), ("none", "'why'", 1, "why\n"),
     ("thread", "0", 0, "")],
)  # fmt: skip
def test_exit_now_writes_everything_and_keeps_the_code(tmp_path, thread, code, returncode, stderr):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    out = tmp_path / "thread.txt"
    r = subprocess.run(
        [sys.executable, "-c", EXIT_NOW, str(out), thread, code],
        capture_output=True,
        text=True,
        env=env,
    )
    assert (r.returncode, r.stderr) == (returncode, stderr)
    assert r.stdout == "x" * 100_000 + "\natexit ran\n"  # flushed, handlers run, in order
    assert out.exists() == (thread == "thread")  # a running thread is waited for


def test_the_console_script_flushes_a_piped_stdout_and_the_log(tmp_path):
    env = {k: v for k, v in cli_env(tmp_path).items() if k != "PYTHONUNBUFFERED"}
    r = subprocess.run(
        [str(CNNLAB), "inspect", "model=lenet5", "--format", "json"],
        cwd=tmp_path, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["params"] == 44_426
    run = tmp_path / "run"
    r = subprocess.run(
        [str(CNNLAB), "train", *PROCESS_RUN, f"hydra.run.dir={run}"],
        cwd=tmp_path, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "accuracy" in (run / "train.log").read_text().splitlines()[-1]
