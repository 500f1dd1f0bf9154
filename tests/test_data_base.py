"""One read of the data's files per run: a data=ucr run opens its training file once, and a
data=image_folder run lists each of its folders once, though the pre-flight check (data.spec)
needs them before the run (data.load) does. An edited file or folder is read again.

Opens and listings are counted through Python's audit events ("open", "os.scandir",
"os.listdir"), which every way of opening or listing raises (open, Path.read_text,
os.open, numpy's loaders, os.walk, Path.iterdir)."""

import os
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import RUN, cnnlab_train, metrics_of
from PIL import Image

from cnnlab import data
from cnnlab.config import ImageFolderDataConfig, UcrDataConfig
from cnnlab.data import base
from cnnlab.data.ucr import UCR_FOLDER

# the audit hook, added once per process (a hook cannot be removed): it counts while a
# test's Counter is set here
counting: list[Counter] = []


def audit(event: str, args: tuple) -> None:
    if counting and event in ("open", "os.scandir", "os.listdir") and args and args[0]:
        path = args[0]
        if event == "open" and writes(*args[1:3]):
            return  # a test writing its data is not the code reading them
        if isinstance(path, (str, bytes, os.PathLike)):
            counting[-1][(event, os.path.realpath(os.fsdecode(path)))] += 1


def writes(mode: str | None, flags: int) -> bool:
    """An "open" event's mode (open) or flags (os.open, mode None) ask to write."""
    if mode is not None:
        return any(c in mode for c in "wax+")
    return bool(flags & (os.O_WRONLY | os.O_RDWR))


sys.addaudithook(audit)


@pytest.fixture
def events(monkeypatch):
    """A Counter of (event, real path) for what the test does while it is set. Files count as
    settled (not just changed, so a read of them is kept) 0.1 s after a change rather than 2 s:
    `settle()` waits that long."""
    monkeypatch.setattr(base, "RECENT_NS", 10**8)
    seen = Counter()
    counting.append(seen)
    yield seen
    counting.remove(seen)


def settle() -> None:
    time.sleep(0.2)


def opens(seen: Counter, path: Path) -> int:
    return seen["open", os.path.realpath(path)]


def listings(seen: Counter, path: Path) -> int:
    real = os.path.realpath(path)
    return seen["os.scandir", real] + seen["os.listdir", real]


def write_ucr(root: Path, name: str = "Chinatown") -> Path:
    """A tiny set of the archive's name under root; returns its training file."""
    folder = root / UCR_FOLDER / name
    folder.mkdir(parents=True)
    rows = {
        "TRAIN": [[1, 1, 2, 3, 4], [2, 4, 3, 2, 1]] * 4,
        "TEST": [[1, 1, 2, 3, 5], [2, 5, 3, 2, 1]],
    }
    for split, table in rows.items():
        lines = ["\t".join(f"{v:g}" for v in row) for row in table]
        (folder / f"{name}_{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder / f"{name}_TRAIN.tsv"


def write_images(root: Path, names=("cat", "dog")) -> list[Path]:
    """root/CLASS/i.png, four images a class; returns root and its class folders."""
    for c, name in enumerate(names):
        for i in range(4):
            path = root / name / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (8, 8), c * 10 + i).save(path)
    return [root] + [root / name for name in names]


def test_a_ucr_run_opens_its_training_file_once(tmp_path, events):
    train_file = write_ucr(tmp_path / "data")
    settle()
    code = cnnlab_train(
        tmp_path / "run", *RUN, "data=ucr", "data.name=Chinatown", f"data.root={tmp_path}/data"
    )
    assert code == 0 and metrics_of(tmp_path / "run")["status"] == "completed"
    assert opens(events, train_file) == 1
    assert opens(events, train_file.with_name("Chinatown_TEST.tsv")) == 1


def test_a_ucr_sweep_opens_each_set_s_files_once(tmp_path, events):
    names = ["Chinatown", "Coffee"]
    files = [write_ucr(tmp_path / "data", name) for name in names]
    settle()
    overrides = [*RUN, "data=ucr", f"data.name={','.join(names)}", f"data.root={tmp_path}/data"]
    assert cnnlab_train(tmp_path / "sweep", *overrides, multirun=True) == 0
    assert [opens(events, f) for f in files] == [1, 1]


def test_an_image_folder_run_lists_each_folder_once(tmp_path, events):
    # more class folders than reads are kept (base.KEPT): the folder is kept as one read
    folders = write_images(tmp_path / "imgs", [f"class{i}" for i in range(base.KEPT + 2)])
    settle()
    code = cnnlab_train(
        tmp_path / "run",
        *RUN,
        "data=image_folder",
        f"data.path={tmp_path}/imgs",
        "data.image_size=8",
        "data.channels=1",
        f"data.root={tmp_path}/data",
    )
    assert code == 0 and metrics_of(tmp_path / "run")["status"] == "completed"
    assert [listings(events, f) for f in folders] == [1] * len(folders)


def ucr_cfg(root: Path):
    return UcrDataConfig(name="Chinatown", root=str(root), download=False)


def test_an_edited_ucr_file_is_read_again(tmp_path, events):
    train_file = write_ucr(tmp_path)
    settle()
    assert data.spec(ucr_cfg(tmp_path)) == ((1, 4), ["1", "2"])
    assert len(data.load(ucr_cfg(tmp_path)).y_train) == 8
    assert opens(events, train_file) == 1
    with open(train_file, "a") as f:  # one more series, of a third class
        f.write("3\t0\t0\t1\t1\n")
    assert data.spec(ucr_cfg(tmp_path)) == ((1, 4), ["1", "2", "3"])
    assert len(data.load(ucr_cfg(tmp_path)).y_train) == 9


def test_a_file_just_written_is_not_trusted_to_show_its_next_change(tmp_path, events):
    # a change within the same tick of the file's timestamp would leave its stat as it was
    train_file = write_ucr(tmp_path)
    data.spec(ucr_cfg(tmp_path))
    data.spec(ucr_cfg(tmp_path))
    assert opens(events, train_file) == 2
    settle()
    data.spec(ucr_cfg(tmp_path))
    data.spec(ucr_cfg(tmp_path))
    assert opens(events, train_file) == 3


def image_count(cfg) -> int:
    ds = data.load(cfg)
    return len(ds.y_train) + len(ds.y_test)


def test_an_image_added_to_a_class_folder_is_listed_again(tmp_path, events):
    folders = write_images(tmp_path / "imgs")
    cfg = ImageFolderDataConfig(path=str(folders[0]), root=str(tmp_path / "data"))
    settle()
    assert data.spec(cfg)[1] == ["cat", "dog"] and image_count(cfg) == 8
    assert [listings(events, f) for f in folders] == [1, 1, 1]
    Image.new("L", (8, 8), 7).save(folders[1] / "new.png")
    assert image_count(cfg) == 9
    (folders[0] / "emu").mkdir()
    Image.new("L", (8, 8), 9).save(folders[0] / "emu" / "0.png")
    assert data.spec(cfg)[1] == ["cat", "dog", "emu"] and image_count(cfg) == 10
