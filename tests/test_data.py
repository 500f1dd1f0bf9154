"""cnnlab.data without Hydra: the digits split, synthetic shapes, spec() before loading,
IDX files checked whole (tiny ones written here), Fashion-MNIST from Debian's package,
and the normalisation arithmetic against torchvision's ToTensor + Normalize."""

import gzip
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab import data
from cnnlab.config import DataConfig, SyntheticDataConfig
from cnnlab.data import DataError
from cnnlab.data.idx import DEBIAN_FASHION_MNIST, DIGITS, IDX_FILES, find_idx_files, read_idx
from cnnlab.outcome import ConfigError

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    # a data root of its own: digits are cached there, never in the checkout
    return data.load(DataConfig(name="digits", root=str(tmp_path_factory.mktemp("data"))))


# ---- digits: real data with no network ---------------------------------------------------


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


# ---- synthetic and spec() ----------------------------------------------------------------


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


# ---- IDX files -----------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: 0x00 0x00 0x08 ndim, big-endian sizes, the data."""
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, 8, array.ndim, *array.shape)
    return header + array.astype(np.uint8).tobytes()


IMAGES = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzipped"])
def test_read_idx_reads_a_valid_file(tmp_path, gz):
    path = tmp_path / ("images-idx3-ubyte" + (".gz" if gz else ""))
    raw = idx_bytes(IMAGES)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    x = read_idx(path)
    assert x.dtype == torch.uint8 and x.shape == (2, 3, 4)
    assert np.array_equal(x.numpy(), IMAGES)


BAD_IDX = {
    "truncated": idx_bytes(IMAGES)[:-5],
    "too long": idx_bytes(IMAGES) + b"\x00" * 3,
    "bad header": b"\x00\x00\x0d\x03" + idx_bytes(IMAGES)[4:],  # float data, not bytes
    "not idx": b"<html>404 Not Found</html>",
    "cut in the header": idx_bytes(IMAGES)[:9],
    "empty": b"",
}


@pytest.mark.parametrize("content", BAD_IDX.values(), ids=list(BAD_IDX))
def test_read_idx_refuses_a_bad_file_naming_it(tmp_path, content):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataError) as e:
        read_idx(path)
    assert str(path) in str(e.value)


def test_read_idx_refuses_a_broken_gzip_naming_it(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(IMAGES))[:20])
    with pytest.raises(DataError) as e:
        read_idx(path)
    assert str(path) in str(e.value)


def write_idx_set(folder: Path, n_train=5, n_test=3, labels_of_train=None):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        if split == "train" and labels_of_train is not None:
            labels = labels_of_train
        (folder / f"{split}-images-idx3-ubyte").write_bytes(idx_bytes(images))
        (folder / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))


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


# ---- Fashion-MNIST from Debian's dataset-fashion-mnist ------------------------------------


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


# ---- normalisation -------------------------------------------------------------------------


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
