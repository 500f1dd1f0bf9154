"""Images per second of data=image_folder: the first load (decode, resize, write the cache)
against the second (read the cache), and decoding on one thread against all of them.

    python benchmarks/image_folder_load.py [--train 3000] [--test 1000] [--size 28] [--channels 1]

The folder is built from Debian's Fashion-MNIST files (dataset-fashion-mnist) in a temporary
folder: train/CLASS/N.png and test/CLASS/N.png, a third each 28x28 grey PNGs, 40x40 RGB
PNGs and 28x28 JPEGs. tests/test_data_image_folder.py builds its folders with the same
function.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # a source checkout

from cnnlab import data  # noqa: E402
from cnnlab.config import DataConfig, ImageFolderDataConfig  # noqa: E402
from cnnlab.data.idx import DEBIAN_FASHION_MNIST, find_idx_files
from cnnlab.data.image_folder import decode_images, listed_images, scan_image_folder


def folder_name(label: str) -> str:
    return label.replace("/", "-")  # "T-shirt/top" cannot be a folder name


def write_fashion_folder(dst: Path, n_train: int, n_test: int) -> Path:
    """dst/train/CLASS/N.png (or .jpg) from the first n_train / n_test Fashion-MNIST images."""
    from PIL import Image

    ds = data.load(DataConfig(name="fashion_mnist", root=str(dst / "unused"), download=False))
    parts = (("train", ds.x_train, ds.y_train, n_train), ("test", ds.x_test, ds.y_test, n_test))
    for part, x, y, n in parts:
        for i in range(n):
            folder = dst / part / folder_name(ds.classes[int(y[i])])
            folder.mkdir(parents=True, exist_ok=True)
            img = Image.fromarray(x[i, 0].numpy(), "L")
            if i % 3 == 0:
                img.save(folder / f"{i}.png")
            elif i % 3 == 1:
                img = img.convert("RGB").resize((40, 40), Image.Resampling.BILINEAR)
                img.save(folder / f"{i}.png")
            else:
                img.save(folder / f"{i}.jpg", quality=90)
    return dst


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:9,.0f} images/s ({seconds:.3f} s)"


def main(args: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", type=int, default=3000)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--channels", type=int, default=1)
    a = p.parse_args(args)
    if not find_idx_files(DEBIAN_FASHION_MNIST):
        print(f"error: {DEBIAN_FASHION_MNIST} is missing (dataset-fashion-mnist)")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_fashion_folder(Path(tmp) / "images", a.train, a.test)
        cfg = ImageFolderDataConfig(
            path=str(folder), root=tmp, image_size=a.size, channels=a.channels
        )
        seconds = []
        for _ in range(2):  # the first decodes and writes the cache, the second reads it
            started = time.perf_counter()
            data.load(cfg)
            seconds.append(time.perf_counter() - started)
        files, _ = listed_images(scan_image_folder(cfg))
        started = time.perf_counter()
        decode_images(files, a.channels, (a.size, a.size), workers=1)
        one_thread = time.perf_counter() - started
    n = len(files)
    threads = min(16, os.cpu_count() or 1)
    print(f"data=image_folder: {n} files -> {a.channels}x{a.size}x{a.size} uint8, {threads} CPUs")
    print(f"  first load (decode on {threads} threads, cache written): {rate(n, seconds[0])}")
    print(f"  second load (cache read):                     {rate(n, seconds[1])}")
    print(f"  decode alone on 1 thread:                     {rate(n, one_thread)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
