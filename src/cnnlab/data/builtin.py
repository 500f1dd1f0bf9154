"""The sources that need no files of the user's: CIFAR-10 (torchvision's batches, downloaded
when missing), scikit-learn's digits (cached as tensors after the first run) and synthetic
data (generated)."""

from __future__ import annotations

import contextlib
import pickle
from pathlib import Path

import torch

from cnnlab.config import DataConfig, SyntheticDataConfig
from cnnlab.data.base import OFFLINE_HINT, DataError, Dataset, data_folder, data_root
from cnnlab.data.download import fetch
from cnnlab.data.idx import DIGITS
from cnnlab.files import atomic_file

CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]

# images per class of the training and test batches, as CIFAR-10 publishes them
CIFAR10_COUNTS, CIFAR10_TEST_COUNTS = [5000] * 10, [1000] * 10
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_FILES = ("batches.meta", *(f"data_batch_{i}" for i in range(1, 6)), "test_batch")


def cifar_spec(cfg: DataConfig) -> tuple[tuple[int, ...], list[str]]:
    """As idx_spec: without a download to come, the batch files must be there."""
    folder = data_folder(cfg) / CIFAR_FOLDER
    if not cfg.download and not all((folder / f).is_file() for f in CIFAR_FILES):
        raise DataError(
            f"cifar10 files not found in {folder} (need {', '.join(CIFAR_FILES)}) and "
            f"data.download=false; {OFFLINE_HINT}"
        )
    return (3, 32, 32), CIFAR10_CLASSES


def cifar_files(cfg: DataConfig) -> Path:
    """The batch files' folder, downloaded and unpacked first when files are missing and
    data.download is set (a run's check calls it: a download that fails leaves no run
    folder). A damaged file is found by the load, which downloads afresh."""
    folder = data_folder(cfg) / CIFAR_FOLDER
    if all((folder / f).is_file() for f in CIFAR_FILES):
        return folder
    cifar_spec(cfg)  # data.download=false: the files must be there
    try:
        download_cifar10(cfg)
    except DataError as e:
        raise DataError(
            f"cifar10 files not found in {folder} and the download failed ({e}); {OFFLINE_HINT}"
        ) from None
    return folder


def download_cifar10(cfg: DataConfig) -> None:
    """torchvision's archive and checksum, fetched here so the deadline of `fetch` holds."""
    import tarfile

    from torchvision.datasets import CIFAR10

    archive = data_folder(cfg) / CIFAR10.filename
    fetch(CIFAR10.url, archive, "md5", CIFAR10.tgz_md5)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(archive.parent, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"{archive} cannot be unpacked ({e})") from None


def load_cifar10(cfg: DataConfig) -> Dataset:
    from torchvision.datasets import CIFAR10

    root = data_folder(cfg)

    def read():  # torchvision checks every batch file's md5 and reads them
        return CIFAR10(root, train=True), CIFAR10(root, train=False)

    folder = root / CIFAR_FOLDER
    try:
        try:
            train, test = read()
        except (RuntimeError, OSError, pickle.UnpicklingError, EOFError):
            if not cfg.download:
                raise
            download_cifar10(cfg)  # missing or damaged: fetched afresh
            train, test = read()
    except (RuntimeError, OSError, pickle.UnpicklingError, EOFError, DataError) as e:
        why = "data.download=false" if not cfg.download else f"the download failed ({e})"
        raise DataError(
            f"cifar10 files not found or damaged in {folder} and {why}; {OFFLINE_HINT}"
        ) from None

    def as_tensors(ds):
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
        return x, torch.tensor(ds.targets, dtype=torch.long)

    return Dataset(*as_tensors(train), *as_tensors(test), CIFAR10_CLASSES)


def load_digits(cfg: DataConfig) -> Dataset:
    """scikit-learn's 8x8 digits, upsampled to 28x28 so MNIST models run on them unchanged.

    Kept in ${data.root}/digits/ after the first run: importing scikit-learn's datasets
    and model selection costs about 0.8 s, half a bare `import torch`, on every start."""
    cache = data_root(cfg) / "digits" / "digits_28x28_v1.pt"
    with contextlib.suppress(Exception):  # no cache, or a damaged one: made again
        x_train, y_train, x_test, y_test = torch.load(cache, weights_only=True)
        return Dataset(x_train, y_train, x_test, y_test, DIGITS)
    import numpy as np
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    x = torch.from_numpy(digits.images).float().unsqueeze(1) * (255 / 16)
    x = torch.nn.functional.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    x = x.round().clamp_(0, 255).to(torch.uint8)
    y = torch.from_numpy(digits.target).long()
    # fixed and stratified, so every run and every seed sees the same 1,347 / 450 split
    train_idx, test_idx = train_test_split(
        np.arange(len(y)), test_size=0.25, stratify=digits.target, random_state=0
    )
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    tensors = (x[train_idx], y[train_idx], x[test_idx], y[test_idx])
    # a read-only data folder, or one under a file: no cache, same data (torch.save raises
    # RuntimeError where a write fails)
    with contextlib.suppress(OSError, RuntimeError):
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(cache) as f:
            torch.save(tensors, f)
    return Dataset(*tensors, DIGITS)


def synthetic(cfg: SyntheticDataConfig) -> Dataset:
    """One smooth random template per class plus noise: learnable in an epoch or two.

    Always generated with the same fixed seed, so the data do not change with `seed`.
    """
    g = torch.Generator().manual_seed(0)
    c, *size = cfg.shape  # (channels, h, w) images or (channels, length) series
    coarse = torch.rand(cfg.classes, c, *(max(1, s // 4) for s in size), generator=g)
    mode = "bilinear" if len(size) == 2 else "linear"
    templates = torch.nn.functional.interpolate(coarse, size=tuple(size), mode=mode)

    def make(n):
        y = torch.randint(cfg.classes, (n,), generator=g)
        x = 0.7 * templates[y] + 0.3 * torch.rand(n, c, *size, generator=g)
        return (x * 255).round().to(torch.uint8), y

    return Dataset(*make(cfg.train_size), *make(cfg.test_size), synthetic_spec(cfg)[1])


def synthetic_spec(cfg: SyntheticDataConfig) -> tuple[tuple[int, ...], list[str]]:
    return tuple(cfg.shape), [f"class {i}" for i in range(cfg.classes)]
