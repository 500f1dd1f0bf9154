"""data=image_folder: the user's own images. Small folders written here with Pillow for the
layout rules, errors, decoding, split and cache; the issue's Fashion-MNIST folder (built
from Debian's files, skipped without them) through the CLI.

Broken and hostile data follow the rules test_data.py's docstring states: one `error:` line
naming the file, the exit code of its status (1 failed, 2 bad_input), nothing hanging."""

import importlib.util
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    RUN,
    failed_in_run,
    folder_cfg,
    folder_run,
    images,
    make_folder,
    output,
    refused,
    train,
    write_image,
)
from PIL import Image

from cnnlab import data
from cnnlab.config import DataConfig, ImageFolderDataConfig
from cnnlab.data import DataError, image_folder
from cnnlab.data.idx import DEBIAN_FASHION_MNIST, find_idx_files
from cnnlab.data.image_folder import IMAGE_BACKGROUND, decode_image, decode_images, image_files
from cnnlab.outcome import ConfigError

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "image_folder_load.py"


_spec = importlib.util.spec_from_file_location("image_folder_load", BENCH)


image_folder_load = importlib.util.module_from_spec(_spec)


_spec.loader.exec_module(image_folder_load)


HAS_FASHION = bool(find_idx_files(DEBIAN_FASHION_MNIST))


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


def odd_entries(folder: Path) -> list[Path]:
    """Entries named as images that are not regular files, in class a."""
    names = ("zero.png", "gone.png", "dir-link.png", "loop.png")
    odd = [folder / "a" / name for name in names]
    os.symlink("/dev/zero", odd[0])
    os.symlink(folder / "a" / "missing.png", odd[1])
    os.symlink(folder / "b", odd[2])
    os.symlink(odd[3], odd[3])  # a link to itself: stat fails with ELOOP
    (folder / "a" / "folder.png").mkdir()  # a folder is walked into, not opened
    images(folder / "a" / "folder.png", {"inner": 1})
    return odd


UNREADABLE = {
    "zero bytes": b"",
    "truncated png": None,  # the first 60 bytes of a real PNG
    "text named .jpg": b"just some text, not a JPEG\n",
}


def decoded(path: Path, channels=1) -> np.ndarray:
    out = decode_image(str(path), channels, (8, 8))
    assert not isinstance(out, str), out
    return out


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


@pytest.mark.skipif(not HAS_FASHION, reason="Debian's dataset-fashion-mnist is not installed")
def test_a_broken_file_is_named_by_the_cli(tmp_path, run_main):
    folder = image_folder_load.write_fashion_folder(tmp_path / "imgs", 60, 20)
    broken = folder / "train" / "Bag" / "broken.png"
    broken.write_bytes(b"garbage" * 10)
    r = run_main(tmp_path, "train", "data=image_folder", f"data.path={folder}", "trainer.epochs=1")
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


def test_a_sweep_over_folders_keeps_each_job_in_one_folder(tmp_path, run_main):
    folders = [make_folder(tmp_path / "images" / name, {"a": 4, "b": 4}) for name in ("x", "y")]
    sweep = tmp_path / "sweep"
    r = run_main(
        tmp_path, "train", "-m", "model=mlp", "data=image_folder", "data.image_size=8",
        "data.path=" + ",".join(map(str, folders)), "trainer.epochs=1", "trainer.progress=false",
        "device=cpu", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert r.returncode == 0, output(r)[-2000:]
    jobs = sorted(p.parent for p in sweep.rglob("metrics.json"))
    assert [job.parent for job in jobs] == [sweep, sweep]  # no folders inside folders
    for job, folder in zip(jobs, folders, strict=True):  # the path, its slashes as _
        assert f",data.path={str(folder).replace('/', '_')}," in job.name


def test_one_class_folder_is_refused_naming_it(tmp_path, capfd):
    folder = images(tmp_path / "imgs", {"cat": 10})
    line = refused(tmp_path, capfd, 2, *folder_run(tmp_path, folder))
    assert "one class folder (cat)" in line and str(folder) in line


def test_an_empty_test_folder_is_refused(tmp_path, capfd):
    images(tmp_path / "imgs" / "train", {"a": 3, "b": 3})
    (tmp_path / "imgs" / "test").mkdir()
    line = refused(tmp_path, capfd, 2, *folder_run(tmp_path, tmp_path / "imgs"))
    assert "test/ has no class folders" in line


def test_one_image_a_class_holds_out_nothing_and_is_refused(tmp_path, capfd):
    folder = images(tmp_path / "imgs", {"a": 1, "b": 1})
    line = refused(tmp_path, capfd, 2, *folder_run(tmp_path, folder))
    assert "data.test_fraction=0.2 holds out no image" in line and "1, 1" in line


def test_a_data_path_that_is_a_file_is_refused(tmp_path, capfd):
    (tmp_path / "photo.png").write_bytes(b"x")
    line = refused(tmp_path, capfd, 2, *folder_run(tmp_path, tmp_path / "photo.png"))
    assert "is not a folder" in line


def test_entries_that_are_not_regular_files_are_skipped_and_named(tmp_path, caplog):
    folder = images(tmp_path / "imgs", {"a": 5, "b": 5})
    odd = odd_entries(folder)
    cfg = ImageFolderDataConfig(path=str(folder), root=str(tmp_path / "data"), image_size=8)
    with caplog.at_level(logging.WARNING, logger="cnnlab.data"):
        ds = data.load(cfg)
    assert len(ds.y_train) + len(ds.y_test) == 11  # 5 + 5 + the one inside folder.png/
    (warning,) = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert warning.startswith("warning: 4 image name(s) skipped")
    assert all(str(p) in warning for p in odd), warning


def test_a_fifo_named_as_an_image_never_hangs_the_run(tmp_path, run_cli):
    folder = images(tmp_path / "imgs", {"a": 5, "b": 5})
    os.mkfifo(folder / "a" / "x.png")  # opening it for reading waits for a writer
    r = run_cli(tmp_path, "train", *RUN, *folder_run(tmp_path, folder), "device=cpu",
                "trainer.progress=false", timeout=120)  # fmt: skip
    text = r.stdout + r.stderr
    assert r.returncode == 0, text[-2000:]
    assert "1 image name(s) skipped, not regular files" in text
    assert str(folder / "a" / "x.png") in text


@pytest.mark.parametrize("case", UNREADABLE)
def test_an_undecodable_image_fails_the_run_naming_it(tmp_path, capfd, case):
    folder = images(tmp_path / "imgs", {"a": 5, "b": 5})
    bad = folder / "b" / ("bad.jpg" if case.endswith(".jpg") else "bad.png")
    if UNREADABLE[case] is None:
        Image.new("L", (64, 64), 7).save(bad)
        bad.write_bytes(bad.read_bytes()[:60])
    else:
        bad.write_bytes(UNREADABLE[case])
    line = failed_in_run(tmp_path, capfd, *folder_run(tmp_path, folder))
    assert str(bad) in line and "cannot be read" in line


def test_class_folder_names_with_odd_characters_train(tmp_path, capfd):
    folder = images(tmp_path / "imgs", {"a b, c": 5, "ü'\"x": 5})
    code, errors, text = train(tmp_path, capfd, *folder_run(tmp_path, folder))
    assert code == 0 and not errors, text[-2000:]
    header = (tmp_path / "run" / "confusion_matrix.csv").read_text().splitlines()[0]
    assert "a b, c" in header and "ü'" in header


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)).save(tmp_path / "x.png")
    assert Image.open(tmp_path / "x.png").mode.startswith("I")
    assert abs(int(decoded(tmp_path / "x.png").mean()) - 128) <= 1  # convert("L"): 255


def test_transparent_palette_pixels_become_the_background(tmp_path):
    img = Image.new("P", (8, 8), 0)
    img.putpalette([255, 0, 0] + [0, 0, 0] * 255)  # index 0: red, and transparent
    img.save(tmp_path / "x.png", transparency=0)
    assert (decoded(tmp_path / "x.png") == IMAGE_BACKGROUND).all()  # convert: red, 76
    assert (decoded(tmp_path / "x.png", 3) == IMAGE_BACKGROUND).all()


@pytest.mark.parametrize(
    "mode, colour, grey",
    [
        ("LA", (0, 0), 255),  # transparent black: the white background
        ("RGBA", (0, 0, 0, 128), 127),  # half-transparent black over white
        ("RGBA", (10, 10, 10, 255), 10),  # opaque: unchanged
    ],
)
def test_alpha_is_laid_over_the_background(tmp_path, mode, colour, grey):
    Image.new(mode, (8, 8), colour).save(tmp_path / "x.png")
    assert abs(int(decoded(tmp_path / "x.png").mean()) - grey) <= 1


@pytest.mark.parametrize(
    "mode, colour, suffix, grey",
    [("CMYK", (0, 0, 0, 0), "tif", 255), ("CMYK", (0, 0, 0, 255), "tif", 0), ("1", 1, "png", 255)],
)
def test_cmyk_and_1_bit_images_convert_as_they_look(tmp_path, mode, colour, suffix, grey):
    Image.new(mode, (8, 8), colour).save(tmp_path / f"x.{suffix}")
    assert abs(int(decoded(tmp_path / f"x.{suffix}").mean()) - grey) <= 1
