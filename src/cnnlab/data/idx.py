"""MNIST and Fashion-MNIST: the four IDX files in data.root/<torchvision's folder>/raw (or,
for Fashion-MNIST, Debian's dataset-fashion-mnist), downloaded with torchvision's list of
files and checksums when missing."""

from __future__ import annotations

import contextlib
import gzip
import math
import shutil
import struct
import zlib
from pathlib import Path

import torch

from cnnlab.config import DataConfig
from cnnlab.data.base import OFFLINE_HINT, DataError, Dataset, data_folder
from cnnlab.data.download import fetch, file_digest
from cnnlab.files import atomic_file

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

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
DIGITS = [str(i) for i in range(10)]


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
    """torchvision's file list and checksums, each archive fetched and unpacked here (so the
    deadline of `fetch` holds); cfg.mirror replaces torchvision's mirrors. An archive already
    here with the right checksum is not fetched again."""
    cls = torchvision_class(cfg.name)
    mirrors = [cfg.mirror.rstrip("/") + "/"] if cfg.mirror else cls.mirrors
    for filename, md5 in cls.resources:
        archive = raw / filename
        if not (archive.is_file() and file_digest(archive, "md5") == md5):
            errors = []
            for mirror in mirrors:
                try:
                    fetch(f"{mirror}{filename}", archive, "md5", md5)
                    break
                except DataError as e:
                    errors.append(str(e))
            else:
                raise DataError("; ".join(errors))
        unpacked = raw / filename.removesuffix(".gz")
        # only to save later runs the gunzip (read_idx reads the .gz too): a failure is no loss
        with contextlib.suppress(OSError), gzip.open(archive) as f, atomic_file(unpacked) as out:
            shutil.copyfileobj(f, out, 1 << 20)


def idx_files(cfg: DataConfig) -> tuple[Path, list[Path] | None]:
    """The raw folder under data.root, and the four IDX files found there (or, for
    Fashion-MNIST, in Debian's folder), or None."""
    raw = data_folder(cfg) / TORCHVISION_FOLDERS[cfg.name] / "raw"
    folders = [raw] + ([DEBIAN_FASHION_MNIST] if cfg.name == "fashion_mnist" else [])
    return raw, next((f for f in map(find_idx_files, folders) if f), None)


def idx_missing(cfg: DataConfig, raw: Path, why: str) -> DataError:
    where = f"{raw} (need {', '.join(IDX_FILES)}, plain or .gz)"
    return DataError(f"{cfg.name} files not found in {where} and {why}; {OFFLINE_HINT}")


def idx_spec(cfg: DataConfig) -> tuple[tuple[int, ...], list[str]]:
    """Without a download to come, the four files must be there: four stats, so a missing
    set fails before a run folder is made, as a missing UCR set does (a run's check then
    downloads them: present_files, through idx_counts)."""
    raw, files = idx_files(cfg)
    if files is None and not cfg.download:
        raise idx_missing(cfg, raw, "data.download=false")
    return (1, 28, 28), FASHION_CLASSES if cfg.name == "fashion_mnist" else DIGITS


def present_files(cfg: DataConfig) -> list[Path]:
    """The four IDX files, downloaded first when missing and data.download is set."""
    raw, files = idx_files(cfg)
    if files is not None:
        return files
    if not cfg.download:
        raise idx_missing(cfg, raw, "data.download=false")
    try:
        download_idx(cfg, raw)
    except DataError as e:
        raise idx_missing(cfg, raw, f"the download failed ({e})") from None
    return find_idx_files(raw)


def idx_counts(cfg: DataConfig) -> tuple[list[int], list[int]]:
    """Images per class, from the two label files alone (70 kB for MNIST)."""
    files = present_files(cfg)
    # a label of 10 or more is refused by the load, naming the file
    return tuple(
        torch.bincount(read_idx(files[i]).long(), minlength=10)[:10].tolist() for i in (1, 3)
    )


def load_idx_dataset(cfg: DataConfig) -> Dataset:
    files = present_files(cfg)
    x_train, y_train, x_test, y_test = (read_idx(p) for p in files)
    for x, p in ((x_train, files[0]), (x_test, files[2])):
        if x.dim() != 3 or x.shape[1:] != (28, 28):
            raise DataError(
                f"{p} holds {'x'.join(map(str, x.shape))} values, not N images of 28x28: "
                f"delete the folder's files and run again"
            )
    for x, y, p in ((x_train, y_train, files[1]), (x_test, y_test, files[3])):
        if y.dim() != 1 or len(x) != len(y) or (len(y) and int(y.max()) >= 10):
            raise DataError(
                f"{p} does not match its images file (count or labels differ): "
                f"delete the folder's files and run again"
            )
    classes = FASHION_CLASSES if cfg.name == "fashion_mnist" else DIGITS
    return Dataset(
        x_train.unsqueeze(1), y_train.long(), x_test.unsqueeze(1), y_test.long(), classes
    )
