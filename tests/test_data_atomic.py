"""The data code's files (caches, unpacked and downloaded files) are written through
files.atomic_file: a write that fails leaves neither a half file nor a temporary one."""

import os

import pytest
import torch

from cnnlab import data
from cnnlab.config import DataConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_digits_cache_that_fails_mid_write_leaves_no_file_behind(tmp_path, monkeypatch):
    def broken(obj, f, *args, **kwargs):  # some bytes out, then the disk is full
        if isinstance(f, (str, os.PathLike)):
            with open(f, "wb") as out:
                out.write(b"half a cache")
        else:
            f.write(b"half a cache")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0")

    monkeypatch.setattr(torch, "save", broken)
    ds = data.load(DataConfig(name="digits", root=str(tmp_path)))
    assert len(ds.y_train) == 1347  # the data all the same, only not cached
    assert list((tmp_path / "digits").iterdir()) == []
