"""What every source shares: the Dataset they load into, DataError, the data folder, lines
for the user, and read_once, which lets the check before the run (data.spec) and the run
(data.load) share one read of a file or one listing of a folder."""

from __future__ import annotations

import logging
import os
import stat
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cnnlab.config import DataConfig
from cnnlab.outcome import ConfigError, RunError

log = logging.getLogger("cnnlab.data")

OFFLINE_HINT = (
    "offline alternatives: copy the files there, point data.root (or CNNLAB_DATA) at a folder "
    "that has them, use data=digits (bundled with scikit-learn), or data=fashion_mnist with "
    "Debian's dataset-fashion-mnist package"
)


class DataError(RunError):
    """Data that cannot be had; the message names the file or folder and the remedy."""


def notify(message: str) -> None:
    """A line for the user: to the log once logging is set up (a run), else to stderr (the
    check before the run, where a UCR set is downloaded, runs before Hydra sets up logging)."""
    if logging.getLogger().handlers:
        log.info(message)
    else:
        print(message, file=sys.stderr, flush=True)


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
    # the validation images load() holds out of the training set (data.val_fraction > 0),
    # and where they sit in the source's training set (what metrics.json records of them)
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    val_index: torch.Tensor | None = None


def data_root(cfg: DataConfig) -> Path:
    """data.root as a path. Its interpolation (the default's ${oc.env:CNNLAB_DATA,data}) is
    resolved here, where the path is used: a DataConfig made in Python, without Hydra,
    holds it as text."""
    root = cfg.root
    if "${" in str(root):
        try:
            root = OmegaConf.create({"root": root}).root
        except OmegaConfBaseException as e:
            why = str(e).strip().splitlines()[0]
            raise ConfigError(f"data.root={cfg.root} cannot be resolved ({why})") from None
    return Path(root).expanduser()


def data_folder(cfg: DataConfig) -> Path:
    """data_root, refused if it is, or is under, something other than a folder (a folder
    not there yet is made when the data come)."""
    root = data_root(cfg)
    try:
        is_folder = stat.S_ISDIR(os.stat(root).st_mode)
    except FileNotFoundError:
        return root
    except OSError:  # NotADirectoryError: a file on the way
        is_folder = False
    if not is_folder:
        raise ConfigError(f"data.root={cfg.root} is not a folder: point it at one (or CNNLAB_DATA)")
    return root


# ---- one read per run -----------------------------------------------------------------
# A run asks for a UCR set's files or an image folder's listing in the check before it and
# again in the run (and a sweep checks every job first). What was read is kept, with the
# stat of every file and folder it came from, and handed out again while none of them has
# changed: an edited, added or removed file is read again.

# A file changed this recently may change again within the same tick of its timestamp (a
# jiffy on ext4, 2 s on FAT) and keep its stat: such a read is not kept (git's "racy clean").
RECENT_NS = 2 * 10**9
KEPT = 16  # reads kept at most (the oldest goes first): a sweep over sets checks them all
kept: OrderedDict[tuple, tuple[list, object]] = OrderedDict()

Stamps = list[tuple[str | Path, tuple | None]]


def stamp(path: str | Path) -> tuple | None:
    """What any change to the file or folder changes, or None: not there, or too recent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) < RECENT_NS:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def read_once(key: tuple, read: Callable[[], tuple[object, Stamps]]):
    """What read() returned for `key` last time, if every file and folder it read is as it
    was; else read() again. read() returns its value and the stamps of what it read, each
    taken before reading it (so a change during the read is seen next time). A value handed
    out twice is shared: callers do not change it."""
    held = kept.get(key)
    if held is not None and all(stamp(path) == then for path, then in held[0]):
        kept.move_to_end(key)
        return held[1]
    value, stamps = read()
    kept.pop(key, None)
    if all(then is not None for _, then in stamps):
        kept[key] = (stamps, value)
        while len(kept) > KEPT:
            kept.popitem(last=False)
    return value
