"""data=image_folder: the user's own images. Small folders written here with Pillow for the
layout rules, errors, decoding, split and cache; the issue's Fashion-MNIST folder (built
from Debian's files, skipped without them) through the CLI."""

import importlib.util
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab import data
from cnnlab.config import DataConfig, ImageFolderDataConfig
from cnnlab.data import DataError, image_folder
from cnnlab.data.idx import DEBIAN_FASHION_MNIST, find_idx_files
from cnnlab.data.image_folder import decode_images, image_files
from cnnlab.outcome import ConfigError

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "image_folder_load.py"
_spec = importlib.util.spec_from_file_location("image_folder_load", BENCH)
image_folder_load = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(image_folder_load)

HAS_FASHION = bool(find_idx_files(DEBIAN_FASHION_MNIST))


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


# ---- layout and spec ---------------------------------------------------------------------


def test_spec_reads_folder_names_and_decodes_nothing(tmp_path, monkeypatch):
    make_folder(tmp_path / "imgs", {"cat": 2, "Ankle boot": 3})
    monkeypatch.setattr(image_folder, "decode_image", None)  # any decode would fail
    cfg = folder_cfg(tmp_path / "imgs", tmp_path, image_size=[20, 12], channels=3)
    assert data.spec(cfg) == ((3, 20, 12), ["Ankle boot", "cat"])


def test_split_given_by_train_and_test_folders(tmp_path):
    make_folder(tmp_path / "imgs", {"a": 3, "b": 2}, "train")
    make_folder(tmp_path / "imgs", {"a": 1}, "test")  # a test set may lack a class
    ds = data.load(folder_cfg(tmp_path / "imgs", tmp_path, image_size=8))
    assert ds.classes == ["a", "b"]
    assert ds.y_train.tolist() == [0, 0, 0, 1, 1] and ds.y_test.tolist() == [0]
    assert ds.x_train[:, 0, 0, 0].tolist() == [0, 1, 2, 40, 41]  # each file's own pixels
    assert ds.x_test.shape == (1, 1, 8, 8) and ds.x_train.dtype == torch.uint8


def test_without_a_split_a_fixed_stratified_one(tmp_path):
    make_folder(tmp_path / "imgs", {"a": 10, "b": 5, "c": 1})
    cfg = folder_cfg(tmp_path / "imgs", tmp_path, image_size=8, test_fraction=0.2)
    ds = data.load(cfg)
    assert torch.bincount(ds.y_test, minlength=3).tolist() == [2, 1, 0]  # a lone image trains
    assert torch.bincount(ds.y_train, minlength=3).tolist() == [8, 4, 1]
    train_values = set(ds.x_train[:, 0, 0, 0].tolist())
    assert not train_values & set(ds.x_test[:, 0, 0, 0].tolist())  # disjoint
    again = data.load(cfg)
    assert torch.equal(again.x_test, ds.x_test)  # the same split every run


def missing(root: Path) -> Path:
    return root / "nope"


def no_class_folders(root: Path) -> Path:
    (root / "empty").mkdir()
    return root / "empty"


def empty_class(root: Path) -> Path:
    make_folder(root / "x", {"a": 2})
    (root / "x" / "b").mkdir()
    return root / "x"


def unknown_test_class(root: Path) -> Path:
    make_folder(root / "x", {"a": 1}, "train")
    return make_folder(root / "x", {"z": 1}, "test")


def train_without_test(root: Path) -> Path:
    return make_folder(root / "x", {"a": 1}, "train")


def unset(root: Path) -> None:
    return None


LAYOUT_ERRORS = {
    "path not set": (unset, "data.path is not set"),
    "missing path": (missing, "does not exist"),
    "no class folders": (no_class_folders, "no class folders"),
    "empty class": (empty_class, "class folder b holds no images"),
    "test class not in train": (unknown_test_class, "test/z has no training folder"),
    "train without test": (train_without_test, "has train/ but no test/"),
}


@pytest.mark.parametrize("make, expected", LAYOUT_ERRORS.values(), ids=list(LAYOUT_ERRORS))
def test_bad_layouts_are_one_line_naming_them(tmp_path, make, expected):
    path = make(tmp_path)
    with pytest.raises(ConfigError) as e:
        data.spec(ImageFolderDataConfig(path=path and str(path), root=str(tmp_path)))
    message = str(e.value)
    assert expected in message and f"data.path={path or ''}" in message and "\n" not in message


def test_a_damaged_file_is_named_and_nothing_trains_without_it(tmp_path):
    make_folder(tmp_path / "imgs", {"Bag": 3, "Coat": 2})
    broken = tmp_path / "imgs" / "Bag" / "broken.png"
    broken.write_bytes(b"\x89PNG garbage, not an image")
    with pytest.raises(DataError) as e:
        data.load(folder_cfg(tmp_path / "imgs", tmp_path))
    assert str(broken) in str(e.value) and "\n" not in str(e.value)


def test_other_files_and_hidden_ones_are_skipped(tmp_path):
    make_folder(tmp_path / "imgs", {"a": 2, "b": 2})
    (tmp_path / "imgs" / "a" / "notes.txt").write_text("not an image")
    write_image(tmp_path / "imgs" / "a" / ".hidden.png", 7)
    write_image(tmp_path / "imgs" / "a" / "sub" / "deeper.PNG", 9)  # sub-folders count
    ds = data.load(folder_cfg(tmp_path / "imgs", tmp_path, test_fraction=0.5))
    assert len(ds.y_train) + len(ds.y_test) == 5


# ---- decoding ----------------------------------------------------------------------------


def test_any_size_and_mode_becomes_the_target_shape(tmp_path):
    folder = tmp_path / "imgs" / "a"
    write_image(folder / "grey.png", 100, (28, 28))
    write_image(folder / "rgb.png", 100, (40, 40), "RGB")
    Image.new("RGB", (50, 30), (100, 100, 100)).save(folder / "photo.jpg", quality=95)
    Image.new("RGBA", (10, 10), (100, 100, 100, 255)).save(folder / "alpha.bmp")
    files = image_files(folder)
    x = decode_images(files, 1, (28, 28))
    assert x.shape == (4, 1, 28, 28) and x.dtype == torch.uint8
    grey = files.index(str(folder / "grey.png"))
    assert (x[grey] == 100).all()  # PNG at the target size: the pixels exactly
    for name in ("rgb.png", "photo.jpg", "alpha.bmp"):  # resized, converted: near 100
        i = files.index(str(folder / name))
        assert (x[i].float() - 100).abs().max() <= 2, name
    rgb = decode_images(files, 3, (16, 12))
    assert rgb.shape == (4, 3, 16, 12)


def test_normalize_auto_is_per_channel_from_the_training_images(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()  # a classifier needs two classes
    for i in range(4):  # red varies, green and blue are constant
        Image.new("RGB", (8, 8), (50 * i, 100, 200)).save(folder / "a" / f"{i}.png")
        Image.new("RGB", (8, 8), (50 * i + 5, 100, 200)).save(folder / "b" / f"{i}.png")
    ds = data.load(folder_cfg(folder, tmp_path, image_size=8, channels=3, test_fraction=0.25))
    mean, std = ds.normalize
    x = ds.x_train.float() / 255
    assert np.allclose(mean, x.mean((0, 2, 3)).tolist(), atol=1e-6)
    assert np.allclose(std[0], float(x[:, 0].std(unbiased=False)), atol=1e-5)
    assert std[1:] == [1.0, 1.0]  # a constant channel is only shifted, never divided by 0
    out = data.to_device(ds.x_train, torch.device("cpu"), ds.normalize)
    assert (
        abs(float(out[:, 0].mean())) < 1e-5 and abs(float(out[:, 0].std(unbiased=False)) - 1) < 1e-4
    )


# ---- the cache ---------------------------------------------------------------------------


def test_second_load_reads_the_cache_and_a_changed_file_is_decoded_again(tmp_path, monkeypatch):
    make_folder(tmp_path / "imgs", {"a": 3, "b": 3})
    cfg = folder_cfg(tmp_path / "imgs", tmp_path)
    first = data.load(cfg)
    assert len(list((tmp_path / "data" / "image_folder_cache").glob("*.pt"))) == 1
    real = decode_images
    monkeypatch.setattr(image_folder, "decode_images", None)  # a second decode would fail
    again = data.load(cfg)
    assert torch.equal(again.x_train, first.x_train) and torch.equal(again.x_test, first.x_test)
    # a changed file (new content and mtime) and another target shape: each decodes anew
    monkeypatch.setattr(image_folder, "decode_images", real)
    write_image(tmp_path / "imgs" / "a" / "0.png", 250)
    os.utime(tmp_path / "imgs" / "a" / "0.png", (time.time() + 5, time.time() + 5))
    changed = data.load(cfg)
    assert 250 in changed.x_train[:, 0, 0, 0].tolist() + changed.x_test[:, 0, 0, 0].tolist()
    data.load(folder_cfg(tmp_path / "imgs", tmp_path, image_size=12))
    assert len(list((tmp_path / "data" / "image_folder_cache").glob("*.pt"))) == 3


def test_a_damaged_cache_is_only_decoded_again(tmp_path):
    make_folder(tmp_path / "imgs", {"a": 5, "b": 5})  # one image of each to test
    cfg = folder_cfg(tmp_path / "imgs", tmp_path)
    first = data.load(cfg)
    (cache,) = (tmp_path / "data" / "image_folder_cache").glob("*.pt")
    cache.write_bytes(b"truncated")
    assert torch.equal(data.load(cfg).x_train, first.x_train)


# ---- config ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, key",
    [
        ({"image_size": 0}, "data.image_size=0"),
        ({"image_size": [28, 28, 3]}, "data.image_size=[28, 28, 3]"),
        ({"channels": 2}, "data.channels=2"),
        ({"test_fraction": 1.0}, "data.test_fraction=1.0"),
        ({"normalize": "mean"}, "data.normalize='mean'"),
        ({"normalize": [0.5, 0]}, "data.normalize=[0.5, 0]"),
    ],
)
def test_bad_values_are_refused_when_the_config_is_made(kw, key):
    with pytest.raises(ConfigError) as e:
        ImageFolderDataConfig(**{"path": "somewhere", **kw})
    assert key in str(e.value)


def test_normalize_auto_and_explicit_values_are_both_accepted():
    assert ImageFolderDataConfig(path="x").normalize == "auto"
    assert ImageFolderDataConfig(path="x", normalize=[0.5, 0.25]).normalize == [0.5, 0.25]
    assert DataConfig(normalize="auto").normalize == "auto"  # any source: from the training set
    assert ImageFolderDataConfig(path="x", image_size=[32, 24]).image_size == (32, 24)


# ---- the Fashion-MNIST folder through the CLI --------------------------------------


def output(r) -> str:
    return r.stdout + r.stderr


@pytest.mark.skipif(not HAS_FASHION, reason="Debian's dataset-fashion-mnist is not installed")
def test_a_broken_file_is_named_by_the_cli(tmp_path, run_cli):
    folder = image_folder_load.write_fashion_folder(tmp_path / "imgs", 60, 20)
    broken = folder / "train" / "Bag" / "broken.png"
    broken.write_bytes(b"garbage" * 10)
    r = run_cli(tmp_path, "train", "data=image_folder", f"data.path={folder}", "trainer.epochs=1")
    assert r.returncode == 1, output(r)
    assert str(broken) in output(r) and "Traceback" not in output(r)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_FASHION, reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_as_a_folder_trains(tmp_path, run_cli):
    folder = image_folder_load.write_fashion_folder(tmp_path / "imgs", 3000, 1000)
    assert (folder / "train" / "Ankle boot").is_dir()
    grey = tmp_path / "grey"
    grey.mkdir()
    args = ["train", "model=lenet5", "data=image_folder", f"data.path={folder}"]
    r = run_cli(grey, *args, "data.image_size=28", "data.channels=1", "trainer.progress=false")
    assert r.returncode == 0, output(r)[-2000:]
    (run,) = (grey / "outputs").glob("*/*")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.65, metrics["accuracy"]
    header = (run / "confusion_matrix.csv").read_text().splitlines()[0]
    assert "Ankle boot" in header and "T-shirt-top" in header
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    r = run_cli(rgb, *args, "data.image_size=32", "data.channels=3", "trainer.epochs=1")
    assert r.returncode == 0, output(r)[-2000:]
    (run,) = (rgb / "outputs").glob("*/*")
    assert json.loads((run / "metrics.json").read_text())["layers"].startswith("conv3-6k5x5")


def test_a_sweep_over_folders_keeps_each_job_in_one_folder(tmp_path, run_cli):
    folders = [make_folder(tmp_path / "images" / name, {"a": 4, "b": 4}) for name in ("x", "y")]
    sweep = tmp_path / "sweep"
    r = run_cli(
        tmp_path, "train", "-m", "model=mlp", "data=image_folder", "data.image_size=8",
        "data.path=" + ",".join(map(str, folders)), "trainer.epochs=1", "trainer.progress=false",
        "device=cpu", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert r.returncode == 0, output(r)[-2000:]
    jobs = sorted(p.parent for p in sweep.rglob("metrics.json"))
    assert [job.parent for job in jobs] == [sweep, sweep]  # no folders inside folders
    for job, folder in zip(jobs, folders, strict=True):  # the path, its slashes as _
        assert f",data.path={str(folder).replace('/', '_')}," in job.name
