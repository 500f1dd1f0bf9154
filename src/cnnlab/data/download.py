"""Downloads: one file from a URL, kept only whole, on time and with the published checksum.
The sources download with this rather than torchvision's helpers, whose timeout bounds each
read only."""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

from cnnlab.data.base import DataError, notify
from cnnlab.files import atomic_file

# A whole download must end within this many seconds: urllib's timeout bounds each read
# only, so a mirror that sends a byte every few seconds would otherwise never end.
DOWNLOAD_DEADLINE = 900
READ_TIMEOUT = 20  # seconds without a byte
# ...and one that sends a little every few seconds fails once it falls below MIN_RATE
# bytes a second over a window of RATE_WINDOW seconds, not after the whole deadline.
MIN_RATE = 1024
RATE_WINDOW = 30


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, dest: Path, algorithm: str, expected: str) -> None:
    """url -> dest (atomic_file: nothing is left of a download that fails), kept only if its
    checksum is `expected` and it came whole within DOWNLOAD_DEADLINE seconds; else a
    DataError naming the URL. A line names the URL and size first; a progress bar follows
    when stderr is a terminal."""
    from urllib.error import URLError
    from urllib.request import build_opener

    deadline = time.monotonic() + DOWNLOAD_DEADLINE
    digest = hashlib.new(algorithm)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # an opener of its own: urlopen's shared one keeps the proxy settings of its first use
        opener = build_opener()
        with opener.open(url, timeout=min(READ_TIMEOUT, DOWNLOAD_DEADLINE)) as response:
            size = int(response.headers.get("Content-Length") or 0) or None
            mb = size and size >= 2**20
            known = f" ({size / 2**20:.1f} MB)" if mb else f" ({size:,} bytes)" if size else ""
            notify(f"downloading {url}{known} to {dest}")
            with atomic_file(dest) as f:
                copy_within(response, f, digest, deadline, url, size)
                if digest.hexdigest() != expected:  # never keep a file not the published one
                    raise DataError(
                        f"{url}: checksum mismatch ({algorithm} {digest.hexdigest()[:16]}...)"
                    )
    except (URLError, OSError, ValueError) as e:  # OSError: a timeout, a full disk
        raise DataError(f"{url}: {getattr(e, 'reason', e)}") from None


def copy_within(response, f, digest, deadline: float, url: str, size: int | None) -> None:
    """The response's bytes into f and digest, refused once the deadline passes or the rate
    over the last RATE_WINDOW seconds falls below MIN_RATE."""
    from tqdm import tqdm

    got = 0
    window_start, window_got = time.monotonic(), 0
    of = f"of {f'{size:,}' if size else 'unknown'} bytes"
    with tqdm(total=size, unit="B", unit_scale=True, disable=not sys.stderr.isatty()) as bar:
        while block := response.read1(1 << 20):  # read1: returns what has come
            now = time.monotonic()
            if now > deadline:
                raise DataError(
                    f"{url}: not complete within the {DOWNLOAD_DEADLINE} s download "
                    f"deadline ({got:,} {of})"
                )
            if now - window_start >= RATE_WINDOW:
                rate = (got - window_got) / (now - window_start)
                if rate < MIN_RATE:
                    raise DataError(
                        f"{url}: {rate:,.1f} bytes/s over the last {now - window_start:.0f} s, "
                        f"below the {MIN_RATE:,} bytes/s a download must keep ({got:,} {of})"
                    )
                window_start, window_got = now, got
            digest.update(block)
            f.write(block)
            got += len(block)
            bar.update(len(block))
