"""cnnlab.data without Hydra: the digits split, synthetic shapes, spec() before loading,
IDX files checked whole (tiny ones written here), Fashion-MNIST from Debian's package,
and the normalisation arithmetic against torchvision's ToTensor + Normalize.

data.train_size / data.test_size: a fixed, seeded sample stratified by class, the same
for every source, every run and every training seed (not the first N rows: an image folder
lists its images class by class).

The data code's files (caches, unpacked and downloaded files) are written through
files.atomic_file: a write that fails leaves neither a half file nor a temporary one.

Issue 28: the validation split, early stopping, multi-scale checks and trainer.threads
attacked as a hostile user would. A split that holds out nothing or everything, or leaves
a class the test set holds out of training, is bad input found by the pre-flight check
from the real training count of every source: one `error:` line on stderr, exit 2, no run
folder. A run stopped early stays stopped when resumed.

Broken and hostile data for every source: each is one `error:` line (or one warning)
naming the file, the line where there is one, the right exit code and no traceback; what
the pre-flight check can see is refused before a run folder exists; nothing hangs.

Exit codes follow the status: data that cannot be had or read (missing offline, a damaged
or malformed file, an undecodable image) is `failed`, 1; data that read fine but cannot
make a classification run (one class, NaN or inf values, test labels the training file
lacks, an empty training or test set, a data.root that is a file) is `bad_input`, 2."""

from __future__ import annotations

import csv
import gzip
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    CPU,
    RUN,
    cnnlab_train,
    failed_in_run,
    folder_run,
    idx,
    images,
    make_folder,
    metrics_of,
    refused,
    train,
    ucr_set,
)
from PIL import Image

from cnnlab import data
from cnnlab.config import (
    DataConfig,
    ImageFolderDataConfig,
    SyntheticDataConfig,
)
from cnnlab.data import DataError
from cnnlab.data.builtin import CIFAR_FILES, CIFAR_FOLDER
from cnnlab.data.idx import DEBIAN_FASHION_MNIST, DIGITS, IDX_FILES, find_idx_files, read_idx
from cnnlab.outcome import ConfigError


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    # a data root of its own: digits are cached there, never in the checkout
    return data.load(DataConfig(name="digits", root=str(tmp_path_factory.mktemp("data"))))


IMAGES = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)


BAD_IDX = {
    "truncated": idx(IMAGES)[:-5],
    "too long": idx(IMAGES) + b"\x00" * 3,
    "bad header": b"\x00\x00\x0d\x03" + idx(IMAGES)[4:],  # float data, not bytes
    "not idx": b"<html>404 Not Found</html>",
    "cut in the header": idx(IMAGES)[:9],
    "empty": b"",
}


def write_idx_set(folder: Path, n_train=5, n_test=3, labels_of_train=None):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        if split == "train" and labels_of_train is not None:
            labels = labels_of_train
        (folder / f"{split}-images-idx3-ubyte").write_bytes(idx(images))
        (folder / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx(labels)))


def three_classes(root, n=40):
    """root/{a,b,c}/i.png: n small grey images per class, each of its own value."""
    for c, name in enumerate("abc"):
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.new("L", (8, 8), 80 * c + i).save(root / name / f"{i}.png")
    return root


def refused_first(tmp_path: Path, capfd, *overrides: str, code: int = 2) -> str:
    """`cnnlab train` refuses before a run folder: `code`, one `error:` line on stderr and
    nothing of it on stdout."""
    capfd.readouterr()
    got = cnnlab_train(tmp_path / "run", *RUN, *overrides)
    out, err = capfd.readouterr()
    assert got == code, out[-2000:] + err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "error" not in out and "Traceback" not in out + err
    assert not (tmp_path / "run").exists()
    return lines[0]


def series(label: int, n: int) -> str:
    return "".join(f"{label}\t{i}\t{i % 3}\t{-i}\n" for i in range(n))


def test_digits_shapes_and_types(digits):
    assert digits.x_train.shape == (1347, 1, 28, 28)
    assert digits.x_test.shape == (450, 1, 28, 28)
    assert digits.x_train.dtype == digits.x_test.dtype == torch.uint8
    assert digits.y_train.dtype == digits.y_test.dtype == torch.int64
    assert digits.classes == [str(i) for i in range(10)]
    assert int(digits.x_train.max()) > 200  # scaled to the 0-255 range, not sklearn's 0-16


def test_digits_split_is_fixed(digits, tmp_path):
    again = data.load(DataConfig(name="digits", root=str(tmp_path)))  # split anew, no cache
    for a, b in [
        (digits.x_train, again.x_train),
        (digits.y_train, again.y_train),
        (digits.x_test, again.x_test),
        (digits.y_test, again.y_test),
    ]:
        assert torch.equal(a, b)


def test_digits_split_is_stratified_and_disjoint(digits):
    train_counts = torch.bincount(digits.y_train, minlength=10)
    test_counts = torch.bincount(digits.y_test, minlength=10)
    assert (train_counts > 0).all() and (test_counts > 0).all()
    # every class keeps its share: a quarter of its images in the test set, to one image
    share = test_counts.double() / (train_counts + test_counts).double()
    assert ((share - 0.25).abs() * (train_counts + test_counts) <= 1).all(), share
    # no test image is also a training image (the 1,797 images are distinct)
    train_rows = {bytes(x.flatten().tolist()) for x in digits.x_train}
    assert not any(bytes(x.flatten().tolist()) in train_rows for x in digits.x_test)


def test_train_and_test_size_keep_a_fixed_stratified_sample(digits, tmp_path):
    small = data.load(DataConfig(name="digits", root=str(tmp_path), train_size=100, test_size=30))
    assert len(small.x_train) == len(small.y_train) == 100
    assert len(small.x_test) == len(small.y_test) == 30
    assert torch.bincount(small.y_train, minlength=10).min() >= 9  # every class, in proportion
    kept = data.sample(digits.y_train, 100)
    assert torch.equal(small.x_train, digits.x_train[kept])  # images of the set, in its order


@pytest.mark.parametrize("shape", [[1, 28, 28], [3, 32, 32], [2, 9, 13]])
def test_synthetic_follows_data_shape(shape):
    cfg = SyntheticDataConfig(shape=shape, classes=4, train_size=40, test_size=12)
    ds = data.load(cfg)
    assert ds.x_train.shape == (40, *shape) and ds.x_test.shape == (12, *shape)
    assert ds.x_train.dtype == torch.uint8
    assert int(ds.y_train.max()) < 4 and len(ds.classes) == 4
    assert data.spec(cfg) == (tuple(shape), ds.classes)
    assert torch.equal(data.load(cfg).x_train, ds.x_train)  # same data every time


def test_spec_knows_shapes_without_reading_files(tmp_path):
    missing = tmp_path / "nothing-here"
    for name, shape in [
        ("mnist", (1, 28, 28)),
        ("fashion_mnist", (1, 28, 28)),
        ("digits", (1, 28, 28)),
        ("cifar10", (3, 32, 32)),
    ]:
        got_shape, classes = data.spec(DataConfig(name=name, root=str(missing)))
        assert (got_shape, len(classes)) == (shape, 10), name
    assert data.spec(DataConfig(name="fashion_mnist"))[1][0] == "T-shirt/top"
    assert not missing.exists()


def test_a_runs_check_has_the_mnist_family_at_hand(tmp_path):
    """A run's check (data.check, after spec) downloads a missing MNIST: a set that cannot
    be had fails there, before a run folder exists (issue 28)."""
    cfg = DataConfig(name="mnist", root=str(tmp_path), mirror="http://127.0.0.1:9/")
    with pytest.raises(DataError, match="the download failed"):
        data.check(cfg, DIGITS)
    assert not list((tmp_path / "MNIST" / "raw").iterdir())


def test_unknown_data_name_is_a_config_error_listing_the_choices():
    with pytest.raises(ConfigError, match="data.name='nosuch'") as e:
        data.spec(DataConfig(name="nosuch"))
    assert "digits" in str(e.value) and "mnist" in str(e.value)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzipped"])
def test_read_idx_reads_a_valid_file(tmp_path, gz):
    path = tmp_path / ("images-idx3-ubyte" + (".gz" if gz else ""))
    raw = idx(IMAGES)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    x = read_idx(path)
    assert x.dtype == torch.uint8 and x.shape == (2, 3, 4)
    assert np.array_equal(x.numpy(), IMAGES)


@pytest.mark.parametrize("content", BAD_IDX.values(), ids=list(BAD_IDX))
def test_read_idx_refuses_a_bad_file_naming_it(tmp_path, content):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataError) as e:
        read_idx(path)
    assert str(path) in str(e.value)


def test_read_idx_refuses_a_broken_gzip_naming_it(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx(IMAGES))[:20])
    with pytest.raises(DataError) as e:
        read_idx(path)
    assert str(path) in str(e.value)


def test_mnist_loads_from_idx_files_in_root(tmp_path):
    write_idx_set(tmp_path / "MNIST" / "raw")
    ds = data.load(DataConfig(name="mnist", root=str(tmp_path), download=False))
    assert ds.x_train.shape == (5, 1, 28, 28) and ds.x_test.shape == (3, 1, 28, 28)
    assert ds.y_train.tolist() == [0, 1, 2, 3, 4]


def test_labels_that_do_not_match_the_images_are_refused(tmp_path):
    write_idx_set(tmp_path / "MNIST" / "raw", labels_of_train=np.array([0, 1, 2], np.uint8))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte"):
        data.load(DataConfig(name="mnist", root=str(tmp_path), download=False))


def test_missing_mnist_without_download_fails_naming_folder_files_and_alternatives(tmp_path):
    started = time.monotonic()
    with pytest.raises(DataError) as e:
        data.load(DataConfig(name="mnist", root=str(tmp_path), download=False))
    assert time.monotonic() - started < 5
    message = str(e.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    for name in IDX_FILES:
        assert name in message
    assert "data=digits" in message and "dataset-fashion-mnist" in message


@pytest.mark.skipif(
    not find_idx_files(DEBIAN_FASHION_MNIST),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_fashion_mnist_loads_from_the_debian_folder(tmp_path):
    cfg = DataConfig(
        name="fashion_mnist", root=str(tmp_path), download=False, train_size=2000, test_size=1000
    )
    ds = data.load(cfg)
    assert ds.x_train.shape == (2000, 1, 28, 28) and ds.x_test.shape == (1000, 1, 28, 28)
    assert ds.x_train.dtype == torch.uint8
    assert len(ds.classes) == 10 and ds.classes[0] == "T-shirt/top"
    assert set(ds.y_train.tolist()) == set(range(10))
    assert set(ds.y_test.tolist()) == set(range(10))
    assert list(tmp_path.iterdir()) == []  # found in place: nothing downloaded or copied


@pytest.mark.parametrize("normalize", [[0.5, 0.5], [0.1307, 0.3081]])
def test_to_device_matches_totensor_then_normalize(digits, normalize):
    from torchvision import transforms

    chapter = transforms.Compose([transforms.ToTensor(), transforms.Normalize(*normalize)])
    images = digits.x_test[:16]
    ours = data.to_device(images, CPU, normalize)
    # the chapter's pipeline, one image at a time, from H x W uint8 arrays
    theirs = torch.stack([chapter(img.squeeze(0).numpy()) for img in images])
    assert ours.dtype == torch.float32 and ours.shape == images.shape
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_to_device_leaves_the_uint8_tensor_alone(digits):
    before = digits.x_test[:4].clone()
    out = data.to_device(digits.x_test[:4], CPU, [0.5, 0.5])
    assert torch.equal(digits.x_test[:4], before)
    assert float(out.min()) >= -1 and float(out.max()) <= 1


def test_cifar10_missing_files_name_the_folder_and_the_alternatives(tmp_path):
    with pytest.raises(data.DataError) as e:
        data.load(DataConfig(name="cifar10", root=str(tmp_path), download=False))
    message = str(e.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "data=digits" in message and "\n" not in message


def test_digits_are_cached_and_the_cache_gives_the_same_split(tmp_path, monkeypatch):
    first = data.load(DataConfig(name="digits", root=str(tmp_path)))
    assert (tmp_path / "digits" / "digits_28x28_v1.pt").is_file()
    # a second load must not need scikit-learn at all
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    again = data.load(DataConfig(name="digits", root=str(tmp_path)))
    for a, b in zip(
        (first.x_train, first.y_train, first.x_test, first.y_test),
        (again.x_train, again.y_train, again.x_test, again.y_test),
        strict=True,
    ):
        assert torch.equal(a, b)


def test_a_folder_cut_to_n_keeps_every_class_in_proportion(tmp_path):
    folder = three_classes(tmp_path / "imgs")
    cfg = ImageFolderDataConfig(path=str(folder), root=str(tmp_path / "data"), image_size=8)
    whole = data.load(cfg)
    assert torch.bincount(whole.y_test).tolist() == [8, 8, 8]  # test_fraction 0.2 of 40
    cut = data.load(ImageFolderDataConfig(**{**vars(cfg), "train_size": 30, "test_size": 9}))
    assert torch.bincount(cut.y_train).tolist() == [10, 10, 10]
    assert torch.bincount(cut.y_test).tolist() == [3, 3, 3]
    # images of the set, with their own labels, in the set's order
    kept = data.sample(whole.y_train, 30)
    assert torch.equal(cut.x_train, whole.x_train[kept]) and kept.tolist() == sorted(kept.tolist())
    assert torch.equal(cut.y_train, whole.y_train[kept])


def test_the_same_n_gives_the_same_images_whatever_the_global_seed(tmp_path):
    cfg = SyntheticDataConfig(train_size=512, test_size=256)
    generated = data.source(cfg).load(cfg)
    cut = DataConfig(name="digits", root=str(tmp_path), train_size=100, test_size=40)
    torch.manual_seed(1)
    first = data.load(cut), data.sample(generated.y_train, 100)
    torch.manual_seed(2)  # as another training seed would set it
    again = data.load(cut), data.sample(generated.y_train, 100)
    assert torch.equal(first[0].x_train, again[0].x_train)
    assert torch.equal(first[0].x_test, again[0].x_test)
    assert torch.equal(first[1], again[1])


@pytest.mark.parametrize(
    "counts, n, expected",
    [
        ([50, 30, 20], 10, [5, 3, 2]),  # exact shares
        ([7, 7, 7], 10, [4, 3, 3]),  # the leftover image to the lowest class on a tie
        ([90, 6, 4], 10, [9, 1, 0]),  # largest remainders: 0.6 beats 0.4
        ([3, 3], 6, [3, 3]),  # n as large as the set: all of it
    ],
)
def test_each_class_keeps_its_share(counts, n, expected):
    y = torch.cat([torch.full((k,), c) for c, k in enumerate(counts)])
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(3))]
    kept = y[data.sample(y, n)]
    assert len(kept) == n
    assert torch.bincount(kept, minlength=len(counts)).tolist() == expected


def test_n_none_or_larger_than_the_set_keeps_it_as_it_is():
    y = torch.tensor([2, 0, 1, 0])
    assert data.sample(y, None) == slice(None) and data.sample(y, 4) == slice(None)


def test_a_run_on_a_folder_cut_to_n_tests_every_class(tmp_path):
    folder = three_classes(tmp_path / "imgs")
    run = tmp_path / "run"
    code = cnnlab_train(
        run, "model=mlp", "data=image_folder", f"data.path={folder}", "data.image_size=8",
        f"data.root={tmp_path / 'data'}", "data.train_size=30", "data.test_size=9",
        "pictures=false", "trainer.epochs=1",
    )  # fmt: skip
    assert code == 0
    with open(run / "confusion_matrix.csv") as f:
        rows = list(csv.reader(f))[1:]
    assert {row[0]: sum(map(int, row[1:])) for row in rows} == {"a": 3, "b": 3, "c": 3}


def test_a_digits_cache_that_fails_mid_write_leaves_no_file_behind(tmp_path, monkeypatch):
    def broken(obj, f, *args, **kwargs):  # some bytes out, then the disk is full
        if isinstance(f, (str, os.PathLike)):
            with open(f, "wb") as out:
                out.write(b"half a cache")
        else:
            f.write(b"half a cache")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0")

    monkeypatch.setattr(torch, "save", broken)
    ds = data.load(DataConfig(name="digits", root=str(tmp_path)))
    assert len(ds.y_train) == 1347  # the data all the same, only not cached
    assert list((tmp_path / "digits").iterdir()) == []


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["data=digits", "data.val_fraction=0.0001"], "holds out 0 of the 1347"),
        (
            ["data=digits", "data.train_size=100000", "data.val_fraction=0.9999"],
            "holds out 1347 of the 1347",
        ),
    ],
    ids=["nothing", "everything"],
)
def test_a_share_that_holds_out_nothing_or_everything_is_refused_first(
    tmp_path, capfd, overrides, words
):
    line = refused_first(tmp_path, capfd, *overrides)
    assert "data.val_fraction=" in line and words in line


def test_a_ucr_share_of_nothing_is_refused_first(tmp_path, capfd):
    args = ucr_set(tmp_path / "root", series(1, 5) + series(2, 5), series(1, 2) + series(2, 2))
    line = refused_first(tmp_path, capfd, *args, "data.val_fraction=0.04")
    assert "data.val_fraction=0.04 holds out 0 of the 10" in line


def test_an_image_folder_share_of_nothing_is_refused_first(tmp_path, capfd):
    make_folder(tmp_path / "imgs", {"a": 4, "b": 4}, "train")
    make_folder(tmp_path / "imgs", {"a": 1, "b": 1}, "test")
    args = ["data=image_folder", f"data.path={tmp_path / 'imgs'}", "data.image_size=8"]
    line = refused_first(tmp_path, capfd, *args, "data.val_fraction=0.05")
    assert "data.val_fraction=0.05 holds out 0 of the 8" in line


@pytest.mark.parametrize(
    "overrides, keys",
    [
        (["data.val_fraction=0.999"], "data.val_fraction=0.999"),
        (["data.train_size=10", "data.val_fraction=0.5"], "data.val_fraction=0.5"),
        (["data.train_size=5"], "data.train_size=5"),
    ],
    ids=["almost all held out", "half of ten", "a sample of five"],
)
def test_a_split_that_leaves_a_class_out_of_training_is_refused(tmp_path, capfd, overrides, keys):
    line = refused_first(tmp_path, capfd, "data=digits", *overrides)
    assert keys in line and "the test set holds" in line and "class" in line


def test_a_ucr_class_whose_only_series_is_held_out_is_refused(tmp_path, capfd):
    # two series of class 1, one of class 2: a half holds out two, one of them class 2's only
    args = ucr_set(tmp_path / "root", series(1, 2) + series(2, 1), series(1, 2) + series(2, 2))
    line = refused_first(tmp_path, capfd, *args, "data.val_fraction=0.5")
    assert "without 1 of the classes the test set holds (2)" in line


def test_image_folder_classes_of_one_image_cannot_lend_it_to_validation(tmp_path, capfd):
    """Stratification with one image per class: holding any out leaves its class untrained."""
    make_folder(tmp_path / "imgs", {"a": 1, "b": 1, "c": 1}, "train")
    make_folder(tmp_path / "imgs", {"a": 1, "b": 1, "c": 1}, "test")
    args = ["data=image_folder", f"data.path={tmp_path / 'imgs'}", "data.image_size=8"]
    line = refused_first(tmp_path, capfd, *args, "data.val_fraction=0.4")
    assert "the test set holds" in line


def test_the_same_split_is_refused_by_a_python_load():
    with pytest.raises(ConfigError, match="the test set holds"):
        data.load(DataConfig(name="digits", train_size=10, val_fraction=0.5))
    with pytest.raises(ConfigError, match="the test set holds"):
        data.load(SyntheticDataConfig(classes=10, train_size=4, test_size=64))


def test_a_test_sample_that_lacks_a_class_is_no_problem():
    """Fewer classes in the test set than in training is the user's choice, not an error."""
    ds = data.load(DataConfig(name="digits", test_size=3, val_fraction=0.1))
    assert len(ds.y_test) == 3 and set(ds.y_train.tolist()) == set(range(10))


def test_tiny_classes_keep_one_image_to_train_on_where_the_share_allows(tmp_path):
    make_folder(tmp_path / "imgs", {"a": 2, "b": 2, "c": 9}, "train")
    make_folder(tmp_path / "imgs", {"a": 1, "b": 1, "c": 1}, "test")
    cfg = ImageFolderDataConfig(
        path=str(tmp_path / "imgs"), root=str(tmp_path / "data"), image_size=8, val_fraction=0.2
    )
    ds = data.load(cfg)
    assert set(ds.y_train.tolist()) == {0, 1, 2} and len(ds.y_val) == round(0.2 * 13)


@pytest.mark.parametrize("val_seed", [0, 1, 7, 12345])
def test_every_val_seed_splits_the_same_counts_and_never_overlaps(val_seed):
    """Another val_seed is another draw of the same per-class counts: the pre-flight's
    check, made from counts, holds for every seed."""
    ds = data.load(DataConfig(name="digits", val_fraction=0.3, val_seed=val_seed))
    base = data.load(DataConfig(name="digits", val_fraction=0.3))
    assert torch.equal(torch.bincount(ds.y_val), torch.bincount(base.y_val))
    full = data.load(DataConfig(name="digits"))
    kept = torch.ones(len(full.y_train), dtype=torch.bool)
    kept[ds.val_index] = False
    assert int(kept.sum()) == len(ds.y_train)


def test_digits_built_in_python_keep_no_folder_named_after_an_interpolation(tmp_path, monkeypatch):
    """A DataConfig made in Python holds data.root's interpolation as text: it is resolved
    where the path is used (CNNLAB_DATA, else ./data), never made a folder of that name."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CNNLAB_DATA", raising=False)
    data.load(DataConfig(name="digits"))
    assert [p.name for p in tmp_path.iterdir()] == ["data"]
    assert (tmp_path / "data" / "digits").is_dir()
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "elsewhere"))
    data.load(DataConfig(name="digits"))
    assert (tmp_path / "elsewhere" / "digits").is_dir()
    assert not any("$" in str(p) for p in tmp_path.rglob("*"))
    assert json.dumps(sorted(p.name for p in tmp_path.iterdir())) == '["data", "elsewhere"]'


@pytest.mark.parametrize("key", ["train_size", "test_size"])
def test_synthetic_data_without_a_size_is_refused_first(tmp_path, capfd, key):
    line = refused_first(tmp_path, capfd, "data=synthetic", f"data.{key}=null")
    assert f"data.{key}=null is not allowed for data=synthetic" in line


@pytest.mark.parametrize(
    "source",
    [["data=ucr", "data.name=ECG200"], ["data=mnist"], ["data=cifar10"]],
    ids=["ucr", "mnist", "cifar10"],
)
def test_a_missing_set_offline_is_failed_before_a_run_folder(tmp_path, capfd, source):
    empty = tmp_path / "EMPTY"
    empty.mkdir()
    line = refused(tmp_path, capfd, 1, *source, "data.download=false", f"data.root={empty}")
    assert str(empty) in line and "data.download=false" in line and "data=digits" in line
    assert list(empty.iterdir()) == []


@pytest.mark.parametrize("under", ["", "/data"], ids=["a file", "under a file"])
@pytest.mark.parametrize("source", ["data=mnist", "data=ucr", "data=cifar10"])
def test_a_data_root_that_is_a_file_is_refused(tmp_path, capfd, source, under):
    (tmp_path / "afile").write_text("not a folder")
    root = f"{tmp_path / 'afile'}{under}"
    line = refused(tmp_path, capfd, 2, source, f"data.root={root}")
    assert f"data.root={root} is not a folder" in line


def test_a_damaged_cifar_batch_fails_the_run_naming_the_folder(tmp_path, capfd):
    folder = tmp_path / "root" / CIFAR_FOLDER
    folder.mkdir(parents=True)
    for name in CIFAR_FILES:
        (folder / name).write_bytes(b"not a pickle")
    args = ["data=cifar10", f"data.root={tmp_path / 'root'}", "data.download=false"]
    line = failed_in_run(tmp_path, capfd, *args)
    assert str(folder) in line and "damaged" in line


@pytest.mark.parametrize(
    "root", ["under a file", "cache folder is a file"], ids=["root-under-file", "cache-is-file"]
)
def test_a_cache_that_cannot_be_written_warns_once_and_the_run_trains(tmp_path, capfd, root):
    folder = images(tmp_path / "imgs", {"a": 5, "b": 5})
    (tmp_path / "afile").write_text("x")
    if root == "under a file":
        data_root = tmp_path / "afile" / "data"
    else:
        data_root = tmp_path / "data"
        data_root.mkdir()
        (data_root / "image_folder_cache").write_text("x")
    overrides = [*folder_run(tmp_path, folder)[:-1], f"data.root={data_root}"]
    code, errors, text = train(tmp_path, capfd, *overrides)
    assert code == 0 and not errors and "Traceback" not in text, text[-2000:]
    assert text.count("could not write the image cache") == 1
    assert metrics_of(tmp_path / "run")["status"] == "completed"


def test_digits_with_a_data_root_under_a_file_train_without_a_cache(tmp_path):
    (tmp_path / "afile").write_text("x")
    cfg = DataConfig(name="digits", root=str(tmp_path / "afile" / "data"), train_size=50)
    assert len(data.load(cfg).y_train) == 50


@pytest.mark.parametrize(
    "args, name", [(["model=lenet5"], "mnist"), (["data=cifar10"], "cifar10")], ids=str
)
def test_a_set_that_cannot_be_downloaded_fails_in_the_check(tmp_path, run_main, args, name):
    """`cnnlab train model=lenet5` with no MNIST files and no network (cli_env: an empty data
    folder, every proxy a closed port): the download is tried by the pre-flight check, so
    its failure is one `error:` line on stderr, exit 1 (failed: data that cannot be had)
    and no run folder (issue 28). CIFAR-10 the same."""
    r = run_main(tmp_path, "train", *args)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"error: {name} files not found"), lines
    assert "the download failed" in lines[0] and "error" not in r.stdout
    assert not (tmp_path / "outputs").exists()
    assert [p for p in (tmp_path / "data").rglob("*") if p.is_file()] == []
