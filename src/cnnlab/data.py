"""Datasets as tensors: source files -> uint8 tensors -> normalised tensors on the device.

A dataset the size of MNIST is 47 MB as uint8, so it is loaded once, normalised once and
kept on the training device; batches are slices of a permutation (train.py). There are no
per-sample transforms and no DataLoader workers: for data this small they cost more than
the model does (see benchmarks/).
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import pickle
import socket
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab.config import ConfigError, DataConfig, SyntheticDataConfig
from cnnlab.outcome import RunError

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
OFFLINE_HINT = (
    "offline alternatives: copy the files there, point data.root (or CNNLAB_DATA) at a folder "
    "that has them, use data=digits (bundled with scikit-learn), or data=fashion_mnist with "
    "Debian's dataset-fashion-mnist package"
)

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
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
DIGITS = [str(i) for i in range(10)]


class DataError(RunError):
    """Data that cannot be had; the message names the file or folder and the remedy."""


@dataclass
class Dataset:
    x_train: torch.Tensor  # uint8, N x C x H x W
    y_train: torch.Tensor  # int64, N
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]


@dataclass(frozen=True)
class Source:
    """A dataset name's two jobs: its input shape and class names, known without reading a
    file (so a model can be built and checked before any data loads), and its loader."""

    spec: Callable[[DataConfig], tuple[tuple[int, ...], list[str]]]
    load: Callable[[DataConfig], Dataset]


def fixed(shape: tuple[int, ...], classes: list[str]):
    return lambda cfg: (shape, classes)


def synthetic_spec(cfg: SyntheticDataConfig) -> tuple[tuple[int, ...], list[str]]:
    return tuple(cfg.shape), [f"class {i}" for i in range(cfg.classes)]


def spec(cfg: DataConfig) -> tuple[tuple[int, ...], list[str]]:
    return source(cfg.name).spec(cfg)


def source(name: str) -> Source:
    if name not in SOURCES:
        raise ConfigError(f"data.name={name!r} is not allowed: choose one of {', '.join(SOURCES)}")
    return SOURCES[name]


def load(cfg: DataConfig) -> Dataset:
    ds = source(cfg.name).load(cfg)
    n_train, n_test = cfg.train_size, cfg.test_size
    return Dataset(
        ds.x_train[:n_train],
        ds.y_train[:n_train],
        ds.x_test[:n_test],
        ds.y_test[:n_test],
        ds.classes,
    )


def to_device(x: torch.Tensor, device: torch.device, normalize) -> torch.Tensor:
    """uint8 images -> float32 on the device, scaled to [0, 1] then (x - mean) / std.

    The same arithmetic as ToTensor + Normalize, done once for the whole set; the uint8
    tensor crosses to the device, a quarter of the bytes of the float one.
    """
    mean, std = normalize
    return x.to(device).float().div_(255).sub_(mean).div_(std)


# ---- MNIST and Fashion-MNIST: IDX files -----------------------------------------------


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file of unsigned bytes (optionally gzipped) as a uint8 tensor, checked whole."""
    remedy = f"delete {path} and run again to download it afresh, or use the {OFFLINE_HINT}"
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # zlib.error: a damaged .gz
        raise DataError(f"{path} cannot be read ({e}): {remedy}") from None
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise DataError(f"{path} is not an IDX file of unsigned bytes (bad header): {remedy}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header]) if len(raw) >= header else ()
    if len(dims) != ndim or len(raw) != header + math.prod(dims):
        raise DataError(
            f"{path} is truncated or corrupted ({len(raw)} bytes, header says "
            f"{header + math.prod(dims) if dims else 'more'}): {remedy}"
        )
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8, offset=header).view(*dims)


def find_idx_files(folder: Path) -> list[Path] | None:
    """The four IDX files in `folder`, plain or gzipped, or None if any is missing."""
    found = []
    for stem in IDX_FILES:
        paths = [folder / stem, folder / f"{stem}.gz"]
        path = next((p for p in paths if p.is_file()), None)
        if path is None:
            return None
        found.append(path)
    return found


# torchvision's folder names (root/<name>/raw); importing torchvision to read them would
# add over a second to every start, so it is imported only to download
TORCHVISION_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


def torchvision_class(name: str):
    import torchvision.datasets

    return getattr(torchvision.datasets, TORCHVISION_FOLDERS[name])


def download_idx(cfg: DataConfig, raw: Path) -> None:
    """torchvision's file list, checksums and extraction; cfg.mirror replaces its mirrors."""
    from urllib.error import URLError

    from torchvision.datasets.utils import download_and_extract_archive

    cls = torchvision_class(cfg.name)
    mirrors = [cfg.mirror.rstrip("/") + "/"] if cfg.mirror else cls.mirrors
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)  # a stalled mirror must not hang the run
    try:
        for filename, md5 in cls.resources:
            errors = []
            for mirror in mirrors:
                try:
                    download_and_extract_archive(
                        f"{mirror}{filename}", download_root=str(raw), filename=filename, md5=md5
                    )
                    break
                except (URLError, OSError, RuntimeError) as e:
                    # a failed checksum leaves the bad archive behind: never keep it
                    (raw / filename).unlink(missing_ok=True)
                    reason = "checksum mismatch" if isinstance(e, RuntimeError) else str(e)
                    errors.append(f"{mirror}{filename}: {reason}")
            else:
                raise DataError("; ".join(errors))
    finally:
        socket.setdefaulttimeout(previous_timeout)


def load_idx_dataset(cfg: DataConfig) -> Dataset:
    raw = Path(cfg.root) / TORCHVISION_FOLDERS[cfg.name] / "raw"
    folders = [raw] + ([DEBIAN_FASHION_MNIST] if cfg.name == "fashion_mnist" else [])
    files = next((f for f in map(find_idx_files, folders) if f), None)
    if files is None:
        where = f"{raw} (need {', '.join(IDX_FILES)}, plain or .gz)"
        if not cfg.download:
            raise DataError(
                f"{cfg.name} files not found in {where} and data.download=false; {OFFLINE_HINT}"
            )
        try:
            download_idx(cfg, raw)
        except DataError as e:
            raise DataError(
                f"{cfg.name} files not found in {where} and the download "
                f"failed ({e}); {OFFLINE_HINT}"
            ) from None
        files = find_idx_files(raw)
    x_train, y_train, x_test, y_test = (read_idx(p) for p in files)
    for x, y, p in ((x_train, y_train, files[1]), (x_test, y_test, files[3])):
        if len(x) != len(y) or (len(y) and int(y.max()) >= 10):
            raise DataError(
                f"{p} does not match its images file (count or labels differ): "
                f"delete the folder's files and run again"
            )
    classes = FASHION_CLASSES if cfg.name == "fashion_mnist" else DIGITS
    return Dataset(
        x_train.unsqueeze(1), y_train.long(), x_test.unsqueeze(1), y_test.long(), classes
    )


# ---- other sources -----------------------------------------------------------------------


def load_cifar10(cfg: DataConfig) -> Dataset:
    from torchvision.datasets import CIFAR10

    try:
        train = CIFAR10(cfg.root, train=True, download=cfg.download)
        test = CIFAR10(cfg.root, train=False, download=cfg.download)
    except (RuntimeError, OSError) as e:
        folder = Path(cfg.root) / "cifar-10-batches-py"
        raise DataError(
            f"cifar10 files not found or unreadable in {folder} and the download "
            f"failed ({e}); {OFFLINE_HINT}"
        ) from None

    def as_tensors(ds):
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
        return x, torch.tensor(ds.targets, dtype=torch.long)

    return Dataset(*as_tensors(train), *as_tensors(test), CIFAR10_CLASSES)


def load_digits(cfg: DataConfig) -> Dataset:
    """scikit-learn's 8x8 digits, upsampled to 28x28 so MNIST models run on them unchanged.

    Kept in ${data.root}/digits/ after the first run: importing scikit-learn's datasets
    and model selection costs about 0.8 s, half a bare `import torch`, on every start."""
    cache = Path(cfg.root) / "digits" / "digits_28x28_v1.pt"
    with contextlib.suppress(OSError, RuntimeError, pickle.UnpicklingError):
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
    with contextlib.suppress(OSError):  # a read-only data folder: no cache, same data
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(tensors, cache.with_suffix(f".{os.getpid()}.tmp"))
        os.replace(cache.with_suffix(f".{os.getpid()}.tmp"), cache)
    return Dataset(*tensors, DIGITS)


def synthetic(cfg: SyntheticDataConfig) -> Dataset:
    """One smooth random template per class plus noise: learnable in an epoch or two.

    Always generated with the same fixed seed, so the data do not change with `seed`.
    """
    g = torch.Generator().manual_seed(0)
    c, h, w = cfg.shape
    coarse = torch.rand(cfg.classes, c, max(1, h // 4), max(1, w // 4), generator=g)
    templates = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear")

    def make(n):
        y = torch.randint(cfg.classes, (n,), generator=g)
        x = 0.7 * templates[y] + 0.3 * torch.rand(n, c, h, w, generator=g)
        return (x * 255).round().to(torch.uint8), y

    return Dataset(*make(cfg.train_size), *make(cfg.test_size), synthetic_spec(cfg)[1])


# Every dataset name, declared once: the config, bench and the CLI read them from here.
SOURCES: dict[str, Source] = {
    "mnist": Source(fixed((1, 28, 28), DIGITS), load_idx_dataset),
    "fashion_mnist": Source(fixed((1, 28, 28), FASHION_CLASSES), load_idx_dataset),
    "cifar10": Source(fixed((3, 32, 32), CIFAR10_CLASSES), load_cifar10),
    "digits": Source(fixed((1, 28, 28), DIGITS), load_digits),
    "synthetic": Source(synthetic_spec, synthetic),
}
